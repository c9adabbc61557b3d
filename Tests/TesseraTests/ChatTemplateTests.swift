import XCTest
import Foundation
@testable import Engine

// Chat templates rendered by the Jinja-subset interpreter must equal what HF transformers'
// apply_chat_template (jinja2, trim_blocks + lstrip_blocks) produces. The expected strings
// below were generated once, offline, with jinja2 3.1 configured as transformers does; the
// template texts are the models' own (SmolLM2-135M-Instruct GGUF metadata; Meta Llama 3.0,
// 3.1, 3.2 Instruct; Qwen2.5 / Qwen3).

enum RealTemplates {
    static let smolLM2 = #"""
{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}{{ '<|im_start|>system
You are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>
' }}{% endif %}{{'<|im_start|>' + message['role'] + '
' + message['content'] + '<|im_end|>' + '
'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant
' }}{% endif %}
"""#

    static let llama30 = #"""
{% set loop_messages = messages %}{% for message in loop_messages %}{% set content = '<|start_header_id|>' + message['role'] + '<|end_header_id|>\n\n'+ message['content'] | trim + '<|eot_id|>' %}{% if loop.index0 == 0 %}{% set content = bos_token + content %}{% endif %}{{ content }}{% endfor %}{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\n\n' }}{% endif %}
"""#

    static let llama31 = #"""
{{- bos_token }}
{%- if custom_tools is defined %}
    {%- set tools = custom_tools %}
{%- endif %}
{%- if not tools_in_user_message is defined %}
    {%- set tools_in_user_message = true %}
{%- endif %}
{%- if not date_string is defined %}
    {%- set date_string = "26 Jul 2024" %}
{%- endif %}
{%- if not tools is defined %}
    {%- set tools = none %}
{%- endif %}

{#- This block extracts the system message, so we can slot it into the right place. #}
{%- if messages[0]['role'] == 'system' %}
    {%- set system_message = messages[0]['content']|trim %}
    {%- set messages = messages[1:] %}
{%- else %}
    {%- set system_message = "" %}
{%- endif %}

{#- System message + builtin tools #}
{{- "<|start_header_id|>system<|end_header_id|>\n\n" }}
{%- if builtin_tools is defined or tools is not none %}
    {{- "Environment: ipython\n" }}
{%- endif %}
{%- if builtin_tools is defined %}
    {{- "Tools: " + builtin_tools | reject('equalto', 'code_interpreter') | join(", ") + "\n\n"}}
{%- endif %}
{{- "Cutting Knowledge Date: December 2023\n" }}
{{- "Today Date: " + date_string + "\n\n" }}
{%- if tools is not none and not tools_in_user_message %}
    {{- "You have access to the following functions. To call a function, please respond with JSON for a function call." }}
    {{- 'Respond in the format {"name": function name, "parameters": dictionary of argument name and its value}.' }}
    {{- "Do not use variables.\n\n" }}
    {%- for t in tools %}
        {{- t | tojson(indent=4) }}
        {{- "\n\n" }}
    {%- endfor %}
{%- endif %}
{{- system_message }}
{{- "<|eot_id|>" }}

{#- Custom tools are passed in a user message with some extra guidance #}
{%- if tools_in_user_message and not tools is none %}
    {#- Extract the first user message so we can plug it in here #}
    {%- if messages | length != 0 %}
        {%- set first_user_message = messages[0]['content']|trim %}
        {%- set messages = messages[1:] %}
    {%- else %}
        {{- raise_exception("Cannot put tools in the first user message when there's no first user message!") }}
{%- endif %}
    {{- '<|start_header_id|>user<|end_header_id|>\n\n' -}}
    {{- "Given the following functions, please respond with a JSON for a function call " }}
    {{- "with its proper arguments that best answers the given prompt.\n\n" }}
    {{- 'Respond in the format {"name": function name, "parameters": dictionary of argument name and its value}.' }}
    {{- "Do not use variables.\n\n" }}
    {%- for t in tools %}
        {{- t | tojson(indent=4) }}
        {{- "\n\n" }}
    {%- endfor %}
    {{- first_user_message + "<|eot_id|>"}}
{%- endif %}

{%- for message in messages %}
    {%- if not (message.role == 'ipython' or message.role == 'tool' or 'tool_calls' in message) %}
        {{- '<|start_header_id|>' + message['role'] + '<|end_header_id|>\n\n'+ message['content'] | trim + '<|eot_id|>' }}
    {%- elif 'tool_calls' in message %}
        {%- if not message.tool_calls|length == 1 %}
            {{- raise_exception("This model only supports single tool-calls at once!") }}
        {%- endif %}
        {%- set tool_call = message.tool_calls[0].function %}
        {%- if builtin_tools is defined and tool_call.name in builtin_tools %}
            {{- '<|start_header_id|>assistant<|end_header_id|>\n\n' -}}
            {{- "<|python_tag|>" + tool_call.name + ".call(" }}
            {%- for arg_name, arg_val in tool_call.arguments | items %}
                {{- arg_name + '="' + arg_val + '"' }}
                {%- if not loop.last %}
                    {{- ", " }}
                {%- endif %}
                {%- endfor %}
            {{- ")" }}
        {%- else  %}
            {{- '<|start_header_id|>assistant<|end_header_id|>\n\n' -}}
            {{- '{"name": "' + tool_call.name + '", ' }}
            {{- '"parameters": ' }}
            {{- tool_call.arguments | tojson }}
            {{- "}" }}
        {%- endif %}
        {%- if builtin_tools is defined %}
            {#- This means we're in ipython mode #}
            {{- "<|eom_id|>" }}
        {%- else %}
            {{- "<|eot_id|>" }}
        {%- endif %}
    {%- elif message.role == "tool" or message.role == "ipython" %}
        {{- "<|start_header_id|>ipython<|end_header_id|>\n\n" }}
        {%- if message.content is mapping or message.content is iterable %}
            {{- message.content | tojson }}
        {%- else %}
            {{- message.content }}
        {%- endif %}
        {{- "<|eot_id|>" }}
    {%- endif %}
{%- endfor %}
{%- if add_generation_prompt %}
    {{- '<|start_header_id|>assistant<|end_header_id|>\n\n' }}
{%- endif %}

"""#

    static let llama32 = #"""
{{- bos_token }}
{%- if custom_tools is defined %}
    {%- set tools = custom_tools %}
{%- endif %}
{%- if not tools_in_user_message is defined %}
    {%- set tools_in_user_message = true %}
{%- endif %}
{%- if not date_string is defined %}
    {%- if strftime_now is defined %}
        {%- set date_string = strftime_now("%d %b %Y") %}
    {%- else %}
        {%- set date_string = "26 Jul 2024" %}
    {%- endif %}
{%- endif %}
{%- if not tools is defined %}
    {%- set tools = none %}
{%- endif %}

{#- This block extracts the system message, so we can slot it into the right place. #}
{%- if messages[0]['role'] == 'system' %}
    {%- set system_message = messages[0]['content']|trim %}
    {%- set messages = messages[1:] %}
{%- else %}
    {%- set system_message = "" %}
{%- endif %}

{#- System message #}
{{- "<|start_header_id|>system<|end_header_id|>\n\n" }}
{%- if tools is not none %}
    {{- "Environment: ipython\n" }}
{%- endif %}
{{- "Cutting Knowledge Date: December 2023\n" }}
{{- "Today Date: " + date_string + "\n\n" }}
{%- if tools is not none and not tools_in_user_message %}
    {{- "You have access to the following functions. To call a function, please respond with JSON for a function call." }}
    {{- 'Respond in the format {"name": function name, "parameters": dictionary of argument name and its value}.' }}
    {{- "Do not use variables.\n\n" }}
    {%- for t in tools %}
        {{- t | tojson(indent=4) }}
        {{- "\n\n" }}
    {%- endfor %}
{%- endif %}
{{- system_message }}
{{- "<|eot_id|>" }}

{#- Custom tools are passed in a user message with some extra guidance #}
{%- if tools_in_user_message and not tools is none %}
    {#- Extract the first user message so we can plug it in here #}
    {%- if messages | length != 0 %}
        {%- set first_user_message = messages[0]['content']|trim %}
        {%- set messages = messages[1:] %}
    {%- else %}
        {{- raise_exception("Cannot put tools in the first user message when there's no first user message!") }}
{%- endif %}
    {{- '<|start_header_id|>user<|end_header_id|>\n\n' -}}
    {{- "Given the following functions, please respond with a JSON for a function call " }}
    {{- "with its proper arguments that best answers the given prompt.\n\n" }}
    {{- 'Respond in the format {"name": function name, "parameters": dictionary of argument name and its value}.' }}
    {{- "Do not use variables.\n\n" }}
    {%- for t in tools %}
        {{- t | tojson(indent=4) }}
        {{- "\n\n" }}
    {%- endfor %}
    {{- first_user_message + "<|eot_id|>"}}
{%- endif %}

{%- for message in messages %}
    {%- if not (message.role == 'ipython' or message.role == 'tool' or 'tool_calls' in message) %}
        {{- '<|start_header_id|>' + message['role'] + '<|end_header_id|>\n\n'+ message['content'] | trim + '<|eot_id|>' }}
    {%- elif 'tool_calls' in message %}
        {%- if not message.tool_calls|length == 1 %}
            {{- raise_exception("This model only supports single tool-calls at once!") }}
        {%- endif %}
        {%- set tool_call = message.tool_calls[0].function %}
        {{- '<|start_header_id|>assistant<|end_header_id|>\n\n' -}}
        {{- '{"name": "' + tool_call.name + '", ' }}
        {{- '"parameters": ' }}
        {{- tool_call.arguments | tojson }}
        {{- "}" }}
        {{- "<|eot_id|>" }}
    {%- elif message.role == "tool" or message.role == "ipython" %}
        {{- "<|start_header_id|>ipython<|end_header_id|>\n\n" }}
        {%- if message.content is mapping or message.content is iterable %}
            {{- message.content | tojson }}
        {%- else %}
            {{- message.content }}
        {%- endif %}
        {{- "<|eot_id|>" }}
    {%- endif %}
{%- endfor %}
{%- if add_generation_prompt %}
    {{- '<|start_header_id|>assistant<|end_header_id|>\n\n' }}
{%- endif %}

"""#

    static let qwen25 = #"""
{%- if tools %}
    {{- '<|im_start|>system\n' }}
    {%- if messages[0]['role'] == 'system' %}
        {{- messages[0]['content'] }}
    {%- else %}
        {{- 'You are Qwen, created by Alibaba Cloud. You are a helpful assistant.' }}
    {%- endif %}
    {{- "\n\n# Tools\n\nYou may call one or more functions to assist with the user query.\n\nYou are provided with function signatures within <tools></tools> XML tags:\n<tools>" }}
    {%- for tool in tools %}
        {{- "\n" }}
        {{- tool | tojson }}
    {%- endfor %}
    {{- "\n</tools>\n\nFor each function call, return a json object with function name and arguments within <tool_call></tool_call> XML tags:\n<tool_call>\n{\"name\": <function-name>, \"arguments\": <args-json-object>}\n</tool_call><|im_end|>\n" }}
{%- else %}
    {%- if messages[0]['role'] == 'system' %}
        {{- '<|im_start|>system\n' + messages[0]['content'] + '<|im_end|>\n' }}
    {%- else %}
        {{- '<|im_start|>system\nYou are Qwen, created by Alibaba Cloud. You are a helpful assistant.<|im_end|>\n' }}
    {%- endif %}
{%- endif %}
{%- for message in messages %}
    {%- if (message.role == "user") or (message.role == "system" and not loop.first) or (message.role == "assistant" and not message.tool_calls) %}
        {{- '<|im_start|>' + message.role + '\n' + message.content + '<|im_end|>' + '\n' }}
    {%- elif message.role == "assistant" %}
        {{- '<|im_start|>' + message.role }}
        {%- if message.content %}
            {{- '\n' + message.content }}
        {%- endif %}
        {%- for tool_call in message.tool_calls %}
            {%- if tool_call.function is defined %}
                {%- set tool_call = tool_call.function %}
            {%- endif %}
            {{- '\n<tool_call>\n{"name": "' }}
            {{- tool_call.name }}
            {{- '", "arguments": ' }}
            {{- tool_call.arguments | tojson }}
            {{- '}\n</tool_call>' }}
        {%- endfor %}
        {{- '<|im_end|>\n' }}
    {%- elif message.role == "tool" %}
        {%- if (loop.index0 == 0) or (messages[loop.index0 - 1].role != "tool") %}
            {{- '<|im_start|>user' }}
        {%- endif %}
        {{- '\n<tool_response>\n' }}
        {{- message.content }}
        {{- '\n</tool_response>' }}
        {%- if loop.last or (messages[loop.index0 + 1].role != "tool") %}
            {{- '<|im_end|>\n' }}
        {%- endif %}
    {%- endif %}
{%- endfor %}
{%- if add_generation_prompt %}
    {{- '<|im_start|>assistant\n' }}
{%- endif %}

"""#

    static let qwen3 = #"""
{%- if tools %}
    {{- '<|im_start|>system\n' }}
    {%- if messages[0].role == 'system' %}
        {{- messages[0].content + '\n\n' }}
    {%- endif %}
    {{- "# Tools\n\nYou may call one or more functions to assist with the user query.\n\nYou are provided with function signatures within <tools></tools> XML tags:\n<tools>" }}
    {%- for tool in tools %}
        {{- "\n" }}
        {{- tool | tojson }}
    {%- endfor %}
    {{- "\n</tools>\n\nFor each function call, return a json object with function name and arguments within <tool_call></tool_call> XML tags:\n<tool_call>\n{\"name\": <function-name>, \"arguments\": <args-json-object>}\n</tool_call><|im_end|>\n" }}
{%- else %}
    {%- if messages[0].role == 'system' %}
        {{- '<|im_start|>system\n' + messages[0].content + '<|im_end|>\n' }}
    {%- endif %}
{%- endif %}
{%- set ns = namespace(multi_step_tool=true, last_query_index=messages|length - 1) %}
{%- for message in messages[::-1] %}
    {%- set index = (messages|length - 1) - loop.index0 %}
    {%- if ns.multi_step_tool and message.role == "user" and not(message.content.startswith('<tool_response>') and message.content.endswith('</tool_response>')) %}
        {%- set ns.multi_step_tool = false %}
        {%- set ns.last_query_index = index %}
    {%- endif %}
{%- endfor %}
{%- for message in messages %}
    {%- if (message.role == "user") or (message.role == "system" and not loop.first) %}
        {{- '<|im_start|>' + message.role + '\n' + message.content + '<|im_end|>' + '\n' }}
    {%- elif message.role == "assistant" %}
        {%- set content = message.content %}
        {%- set reasoning_content = '' %}
        {%- if message.reasoning_content is defined and message.reasoning_content is not none %}
            {%- set reasoning_content = message.reasoning_content %}
        {%- else %}
            {%- if '</think>' in message.content %}
                {%- set content = message.content.split('</think>')[-1].lstrip('\n') %}
                {%- set reasoning_content = message.content.split('</think>')[0].rstrip('\n').split('<think>')[-1].lstrip('\n') %}
            {%- endif %}
        {%- endif %}
        {%- if loop.index0 > ns.last_query_index %}
            {%- if loop.last or (not loop.last and reasoning_content) %}
                {{- '<|im_start|>' + message.role + '\n<think>\n' + reasoning_content.strip('\n') + '\n</think>\n\n' + content.lstrip('\n') }}
            {%- else %}
                {{- '<|im_start|>' + message.role + '\n' + content }}
            {%- endif %}
        {%- else %}
            {{- '<|im_start|>' + message.role + '\n' + content }}
        {%- endif %}
        {%- if message.tool_calls %}
            {%- for tool_call in message.tool_calls %}
                {%- if (loop.first and content) or (not loop.first) %}
                    {{- '\n' }}
                {%- endif %}
                {%- if tool_call.function %}
                    {%- set tool_call = tool_call.function %}
                {%- endif %}
                {{- '<tool_call>\n{"name": "' }}
                {{- tool_call.name }}
                {{- '", "arguments": ' }}
                {%- if tool_call.arguments is string %}
                    {{- tool_call.arguments }}
                {%- else %}
                    {{- tool_call.arguments | tojson }}
                {%- endif %}
                {{- '}\n</tool_call>' }}
            {%- endfor %}
        {%- endif %}
        {{- '<|im_end|>\n' }}
    {%- elif message.role == "tool" %}
        {%- if loop.first or (messages[loop.index0 - 1].role != "tool") %}
            {{- '<|im_start|>user' }}
        {%- endif %}
        {{- '\n<tool_response>\n' }}
        {{- message.content }}
        {{- '\n</tool_response>' }}
        {%- if loop.last or (messages[loop.index0 + 1].role != "tool") %}
            {{- '<|im_end|>\n' }}
        {%- endif %}
    {%- endif %}
{%- endfor %}
{%- if add_generation_prompt %}
    {{- '<|im_start|>assistant\n' }}
    {%- if enable_thinking is defined and enable_thinking is false %}
        {{- '<think>\n\n</think>\n\n' }}
    {%- endif %}
{%- endif %}
"""#
}

/// jinja2's renderings (bos_token "<|begin_of_text|>", eos_token "<|eot_id|>", tools none,
/// Llama date "26 Jul 2024") of the conversations in ChatTemplateTests.
enum Expected {
    static let smolUserGen = "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n<|im_start|>user\nWhat is the capital of France?<|im_end|>\n<|im_start|>assistant\n"
    static let smolSystemUser = "<|im_start|>system\nYou are a pirate.  <|im_end|>\n<|im_start|>user\nWhat is the capital of France?<|im_end|>\n"
    static let smolMultiTurn = "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n<|im_start|>user\nWhat is the capital of France?<|im_end|>\n<|im_start|>assistant\n Paris is the capital.\n<|im_end|>\n<|im_start|>user\nAnd of Germany? Use \"quotes\" & <tags> — ünïcode 🚀<|im_end|>\n<|im_start|>assistant\n"
    static let llama30MultiTurn = "<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\nYou are a pirate.<|eot_id|><|start_header_id|>user<|end_header_id|>\n\nWhat is the capital of France?<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\nParis is the capital.<|eot_id|><|start_header_id|>user<|end_header_id|>\n\nAnd of Germany? Use \"quotes\" & <tags> — ünïcode 🚀<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n"
    static let llama31User = "<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\nCutting Knowledge Date: December 2023\nToday Date: 26 Jul 2024\n\n<|eot_id|><|start_header_id|>user<|end_header_id|>\n\nWhat is the capital of France?<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n"
    static let llama31MultiTurn = "<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\nCutting Knowledge Date: December 2023\nToday Date: 26 Jul 2024\n\nYou are a pirate.<|eot_id|><|start_header_id|>user<|end_header_id|>\n\nWhat is the capital of France?<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\nParis is the capital.<|eot_id|><|start_header_id|>user<|end_header_id|>\n\nAnd of Germany? Use \"quotes\" & <tags> — ünïcode 🚀<|eot_id|>"
    static let llama32User = "<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\nCutting Knowledge Date: December 2023\nToday Date: 26 Jul 2024\n\n<|eot_id|><|start_header_id|>user<|end_header_id|>\n\nWhat is the capital of France?<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n"
    static let llama32MultiTurn = "<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\nCutting Knowledge Date: December 2023\nToday Date: 26 Jul 2024\n\nYou are a pirate.<|eot_id|><|start_header_id|>user<|end_header_id|>\n\nWhat is the capital of France?<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\nParis is the capital.<|eot_id|><|start_header_id|>user<|end_header_id|>\n\nAnd of Germany? Use \"quotes\" & <tags> — ünïcode 🚀<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n"
    static let qwen25User = "<|im_start|>system\nYou are Qwen, created by Alibaba Cloud. You are a helpful assistant.<|im_end|>\n<|im_start|>user\nWhat is the capital of France?<|im_end|>\n<|im_start|>assistant\n"
    static let qwen25MultiTurn = "<|im_start|>system\nYou are a pirate.  <|im_end|>\n<|im_start|>user\nWhat is the capital of France?<|im_end|>\n<|im_start|>assistant\n Paris is the capital.\n<|im_end|>\n<|im_start|>user\nAnd of Germany? Use \"quotes\" & <tags> — ünïcode 🚀<|im_end|>\n<|im_start|>assistant\n"
}

final class ChatTemplateTests: XCTestCase {
    let S = ChatMessage(role: "system", content: "You are a pirate.  ")
    let U1 = ChatMessage(role: "user", content: "What is the capital of France?")
    let A1 = ChatMessage(role: "assistant", content: " Paris is the capital.\n")
    let U2 = ChatMessage(role: "user", content: "And of Germany? Use \"quotes\" & <tags> — ünïcode 🚀")
    let A2 = ChatMessage(role: "assistant", content: "Berlin.")

    func render(_ template: String, _ messages: [ChatMessage], gen: Bool, date: String? = "26 Jul 2024") throws -> String {
        try ChatTemplate(jinja: template).render(messages: messages, addGenerationPrompt: gen,
                                                 bosToken: "<|begin_of_text|>", eosToken: "<|eot_id|>", dateString: date)
    }

    /// 26 Jul 2024, noon local time (what `strftime_now` formats).
    var july26: Date {
        var c = DateComponents(); c.year = 2024; c.month = 7; c.day = 26; c.hour = 12
        return Calendar(identifier: .gregorian).date(from: c)!
    }

    // MARK: real templates vs jinja2

    func testSmolLM2() throws {
        XCTAssertEqual(try render(RealTemplates.smolLM2, [U1], gen: true), Expected.smolUserGen)
        XCTAssertEqual(try render(RealTemplates.smolLM2, [S, U1], gen: false), Expected.smolSystemUser)
        XCTAssertEqual(try render(RealTemplates.smolLM2, [U1, A1, U2], gen: true), Expected.smolMultiTurn)
    }

    func testLlama30() throws {
        XCTAssertEqual(try render(RealTemplates.llama30, [S, U1, A1, U2], gen: true), Expected.llama30MultiTurn)
        // The built-in "llama3" family renders the same text.
        let builtin = try XCTUnwrap(ChatTemplate.named("llama3"))
        XCTAssertEqual(try builtin.render(messages: [S, U1, A1, U2], addGenerationPrompt: true,
                                          bosToken: "<|begin_of_text|>", eosToken: "<|eot_id|>"), Expected.llama30MultiTurn)
    }

    func testLlama31() throws {
        // Llama 3.1's template has its own default date ("26 Jul 2024") when date_string is absent.
        XCTAssertEqual(try render(RealTemplates.llama31, [U1], gen: true, date: nil), Expected.llama31User)
        XCTAssertEqual(try render(RealTemplates.llama31, [S, U1, A1, U2], gen: false, date: nil), Expected.llama31MultiTurn)
    }

    func testLlama32() throws {
        XCTAssertEqual(try render(RealTemplates.llama32, [U1], gen: true), Expected.llama32User)
        XCTAssertEqual(try render(RealTemplates.llama32, [S, U1, A1, U2], gen: true), Expected.llama32MultiTurn)
        // Without date_string the template calls strftime_now("%d %b %Y").
        let t = try ChatTemplate(jinja: RealTemplates.llama32)
        XCTAssertEqual(try t.render(messages: [U1], addGenerationPrompt: true, bosToken: "<|begin_of_text|>",
                                    eosToken: "<|eot_id|>", now: july26), Expected.llama32User)
        let other = try t.render(messages: [U1], addGenerationPrompt: true, bosToken: "<|begin_of_text|>",
                                 eosToken: "<|eot_id|>", dateString: "1 Jan 2025")
        XCTAssertTrue(other.contains("Cutting Knowledge Date: December 2023\nToday Date: 1 Jan 2025\n\n<|eot_id|>"))
    }

    func testQwen25() throws {
        XCTAssertEqual(try render(RealTemplates.qwen25, [U1], gen: true), Expected.qwen25User)
        XCTAssertEqual(try render(RealTemplates.qwen25, [S, U1, A1, U2], gen: true), Expected.qwen25MultiTurn)
    }

    func testQwen3Renders() throws {
        // namespace(), messages[::-1], str.split/lstrip, `is false`: reasoning of the last reply kept.
        let a = ChatMessage(role: "assistant", content: "<think>\nhmm\n</think>\n\nBerlin.")
        XCTAssertEqual(try render(RealTemplates.qwen3, [U1, a], gen: false),
                       "<|im_start|>user\nWhat is the capital of France?<|im_end|>\n<|im_start|>assistant\n<think>\nhmm\n</think>\n\nBerlin.<|im_end|>\n")
        // ... and dropped once a later user turn follows, so Qwen3 is not prefix-stable.
        XCTAssertEqual(try render(RealTemplates.qwen3, [U1, a, U2], gen: false),
                       "<|im_start|>user\nWhat is the capital of France?<|im_end|>\n<|im_start|>assistant\nBerlin.<|im_end|>\n<|im_start|>user\n\(U2.content)<|im_end|>\n")
        let t = try ChatTemplate(jinja: RealTemplates.qwen3)
        XCTAssertThrowsError(try t.renderIncrement(previous: [U1, a], new: [U2], bosToken: "", eosToken: "")) { e in
            guard case ChatTemplateError.notIncremental = e else { return XCTFail("\(e)") }
        }
    }

    func testSmolLM2TemplateMatchesGGUF() throws {
        let path = try TestPaths.requireDemoModel()
        let gguf = try GGUFFile(path: path)
        XCTAssertEqual(gguf.string("tokenizer.chat_template"), RealTemplates.smolLM2)
    }

    // MARK: incremental rendering (KV-cache reuse across turns)

    func testPrefixPropertyAndIncrement() throws {
        let conversations: [(String, [ChatMessage])] = [
            (RealTemplates.smolLM2, [U1, A1, U2, A2]), (RealTemplates.smolLM2, [S, U1, A1, U2, A2]),
            (RealTemplates.llama30, [S, U1, A1, U2, A2]), (RealTemplates.llama31, [U1, A1, U2, A2]),
            (RealTemplates.llama32, [S, U1, A1, U2, A2]), (RealTemplates.llama32, [U1, A1, U2, A2]),
            (RealTemplates.qwen25, [U1, A1, U2, A2]),
        ]
        for (source, msgs) in conversations {
            let t = try ChatTemplate(jinja: source)
            func r(_ n: Int, _ gen: Bool) throws -> String {
                try t.render(messages: Array(msgs[0..<n]), addGenerationPrompt: gen, bosToken: "<B>", eosToken: "<E>", dateString: "26 Jul 2024")
            }
            // Turn boundaries: after each assistant reply (and at the start).
            for n in stride(from: msgs[0].role == "system" ? 1 : 0, to: msgs.count - 1, by: 2) {
                // (Some templates cannot render an empty conversation: messages[0] is read.)
                let before = n == 0 ? "" : try r(n, false), after = try r(n + 2, false)
                XCTAssertTrue(after.hasPrefix(before), "prefix property, n=\(n)")
                // The prompt with generation prompt, then the reply, is a prefix of the next rendering.
                let prompt = try r(n + 1, true)
                XCTAssertTrue(after.hasPrefix(prompt), "generation prompt prefix, n=\(n)")
                let inc = try t.renderIncrement(previous: Array(msgs[0..<n]), new: [msgs[n]], bosToken: "<B>", eosToken: "<E>", dateString: "26 Jul 2024")
                XCTAssertEqual(before + inc, prompt)
            }
        }
        XCTAssertEqual(ChatTemplate.suffix(of: "abcdef", after: "abc"), "def")
        XCTAssertNil(ChatTemplate.suffix(of: "abcdef", after: "abd"))
    }

    // MARK: errors

    func testSyntaxErrorsAreClear() {
        func message(_ source: String) -> String {
            do { _ = try ChatTemplate(jinja: source); return "no error" } catch { return "\(error)" }
        }
        XCTAssertEqual(message("{% for m in messages %}{{ m.content }}"),
                       "chat template syntax error: line 1: unexpected end of template: 'for' opened on line 1 is never closed (expected 'else' or 'endfor')")
        XCTAssertEqual(message("a\n{{ 1 + }}"), "chat template syntax error: line 2: unexpected '}}' in expression")
        XCTAssertEqual(message("{% if x %}a{% endfor %}"),
                       "chat template syntax error: line 1: unexpected 'endfor' tag (no matching opening tag)")
        XCTAssertEqual(message("{{ 'abc }}"), "chat template syntax error: line 1: unterminated string literal")
        XCTAssertEqual(message("{% frobnicate %}"), "chat template syntax error: line 1: unknown tag 'frobnicate'")
        XCTAssertEqual(message("x\n\n{{ messages | frobnicate }}"), "chat template error: line 3: unknown filter 'frobnicate'")
        XCTAssertThrowsError(try ChatTemplate(jinja: "{{ x | frobnicate }}")) { e in
            XCTAssertEqual(e as? ChatTemplateError, .unknownFilter("frobnicate", line: 1))
        }
        XCTAssertThrowsError(try ChatTemplate(jinja: "{{ x is frobnicated }}")) { e in
            XCTAssertEqual(e as? ChatTemplateError, .unknownTest("frobnicated", line: 1))
        }
    }

    func testRenderErrors() throws {
        let t = try ChatTemplate(jinja: "{% if messages[0].role != 'user' %}{{ raise_exception('first message must be from the user') }}{% endif %}ok")
        XCTAssertEqual(try t.render(messages: [U1], addGenerationPrompt: false, bosToken: "", eosToken: ""), "ok")
        XCTAssertThrowsError(try t.render(messages: [S], addGenerationPrompt: false, bosToken: "", eosToken: "")) { e in
            XCTAssertEqual(e as? ChatTemplateError, .raised("first message must be from the user"))
        }
        let bad = try ChatTemplate(jinja: "{{ messages[0].content + 1 }}")
        XCTAssertThrowsError(try bad.render(messages: [U1], addGenerationPrompt: false, bosToken: "", eosToken: "")) { e in
            XCTAssertEqual("\(e)", "chat template render error: unsupported operand type(s) for +: 'str' and 'int'")
        }
    }

    // MARK: interpreter details (expected values from jinja2)

    func testInterpreterSemantics() throws {
        func r(_ s: String) throws -> String {
            try ChatTemplate(jinja: s).render(messages: [U1, A1], addGenerationPrompt: true, bosToken: "<B>", eosToken: "<E>")
        }
        XCTAssertEqual(try r("{{ 1 + 2 }}|{{ 7 // 2 }}|{{ 7 / 2 }}|{{ -7 % 3 }}|{{ 2 ** 10 }}|{{ 1.5 * 2 }}|{{ \"ab\" * 3 }}"), "3|3|3.5|2|1024|3.0|ababab")
        XCTAssertEqual(try r("{{ [1, 'a', none, true, 1.0, {'k': [2]}] }}|{{ none }}|{{ undefined_var }}|{{ ['it\\'s', \"q\\\"q\"] }}"),
                       "[1, 'a', None, True, 1.0, {'k': [2]}]|None||[\"it's\", 'q\"q']")
        XCTAssertEqual(try r("{% for m in messages %}{{ loop.index }}{{ loop.index0 }}{{ loop.first }}{{ loop.last }}{{ loop.length }}{% endfor %}"),
                       "10TrueFalse221FalseTrue2")
        XCTAssertEqual(try r("{% set x = 1 %}{% for i in [1,2] %}{{x}}{% set x = x + 1 %}{{x}}{% endfor %}{{x}}"), "12121")
        XCTAssertEqual(try r("{% set ns = namespace(n=0, s='') %}{% for m in messages %}{% set ns.n = ns.n + 1 %}{% set ns.s = ns.s ~ m.role[0] %}{% endfor %}{{ ns.n }}{{ ns.s }}"), "2ua")
        XCTAssertEqual(try r("{{ messages[1:] | length }}{{ messages[-1].role }}{{ messages[::-1][0]['role'] }}{{ 'hello'[1:3] }}{{ 'hello'[::-2] }}{{ [1,2,3,4,5][4:0:-2] }}"),
                       "1assistantassistantelolh[5, 3]")
        XCTAssertEqual(try r("{{ '  a b  '.strip() }}|{{ 'xxaxx'.strip('x') }}|{{ 'a,b,,c'.split(',') }}|{{ ' a  b '.split() }}|{{ 'abc'.startswith('ab') }}{{ 'abc'.endswith(('x','c')) }}"),
                       "a b|a|['a', 'b', '', 'c']|['a', 'b']|TrueTrue")
        XCTAssertEqual(try r("{{ x is defined }}{{ none is none }}{{ 'a' is string }}{{ tools is none }}{{ 3 is divisibleby 3 }}{{ 'role' in messages[0] }}{{ 'x' not in 'abc' }}{{ 1 == 1.0 }}"),
                       "FalseTrueTrueTrueTrueTrueTrueTrue")
        XCTAssertEqual(try r("{{ x | default('d') }}|{{ '' | default('e', true) }}|{{ [3,1,2] | first }}{{ [3,1,2] | last }}|{{ 'abc' | upper }}{{ 'ABC' | lower }}|{{ '  t  ' | trim }}|"),
                       "d|e|32|ABCabc|t|")
        XCTAssertEqual(try r("{{ {'b': 1, 'a': [1, \"x\", none, true, 2.5]} | tojson }}|{{ {'a': {'b': []}} | tojson(indent=2) }}|{{ \"é\\n\" | tojson }}"),
                       "{\"b\": 1, \"a\": [1, \"x\", null, true, 2.5]}|{\n  \"a\": {\n    \"b\": []\n  }\n}|\"é\\n\"")
        XCTAssertEqual(try r("{{ 'a' if true else 'b' }}{{ 'a' if false else 'b' }}|{{ 1 and 2 }}{{ 0 or 'x' }}{{ not 1 }}"), "ab|2xFalse")
        XCTAssertEqual(try r("{% for x in range(5) %}{% if x == 1 %}{% continue %}{% endif %}{% if x == 3 %}{% break %}{% endif %}{{ x }}{% endfor %}"), "02")
        XCTAssertEqual(try r("{% for k, v in {'a': 1, 'b': 2}.items() %}{{ k }}={{ v }};{% endfor %}{% for x in [1,2,3,4] if x is even %}{{ x }}{% else %}none{% endfor %}"), "a=1;b=2;24")
        XCTAssertEqual(try r("{{ \"tab\\there\" }}|{{ 'uni\\u00e9\\x41' }}|{{ \"a\" \"b\" }}|{{ 'x\\d' }}"), "tab\there|uniéA|ab|x\\d")
    }

    func testWhitespaceControl() throws {
        // trim_blocks + lstrip_blocks + explicit - / + markers, as HF configures jinja2.
        let source = "a\n  {%- if true -%}\n    b\n  {%- endif -%}\n  c {{- ' d ' -}} e\n   {{ 'f' }}\n\t{% for m in messages %}\n\t  {{ m.role }}\n\t{% endfor %}\n{# line comment #}\nend\n"
        XCTAssertEqual(try ChatTemplate(jinja: source).render(messages: [U1, A1], addGenerationPrompt: false, bosToken: "", eosToken: ""),
                       "abc d e\n   f\n\t  user\n\t  assistant\nend")
        let source2 = "   {% if true %}\n  indented\n   {% endif %}\n {# comment #}\nx  {#- c2 -#}  y\n{%+ if true %}keep{% endif +%}\nz\n{% raw %}{{ not rendered }}{% endraw %}"
        XCTAssertEqual(try ChatTemplate(jinja: source2).render(messages: [], addGenerationPrompt: false, bosToken: "", eosToken: ""),
                       "  indented\nxy\nkeep\nz\n{{ not rendered }}")
    }

    // MARK: family fallback and resolution

    func testFamilyFallback() throws {
        // Unsupported feature (macro) in a ChatML-looking template -> built-in chatml.
        let chatmlish = "{% macro turn(m) %}<|im_start|>{{ m.role }}{% endmacro %}{% for m in messages %}{{ turn(m) }}{% endfor %}"
        let t = try ChatTemplate.fromModel(chatmlish)
        XCTAssertEqual(t.builtinFamily, .chatml)
        XCTAssertNotNil(t.fallbackReason)
        XCTAssertEqual(try t.render(messages: [U1], addGenerationPrompt: true, bosToken: "", eosToken: ""),
                       "<|im_start|>user\nWhat is the capital of France?<|im_end|>\n<|im_start|>assistant\n")
        // Fails while rendering the probe conversation -> family from its text.
        let llamaish = "{{ bos_token }}{% for m in messages %}<|start_header_id|>{{ m.role | frobnicate }}{% endfor %}"
        XCTAssertEqual(try ChatTemplate.fromModel(llamaish).builtinFamily, .llama3)
        let renderFails = "{% for m in messages %}<|start_header_id|>{{ m.role + 1 }}{% endfor %}"
        XCTAssertEqual(try ChatTemplate.fromModel(renderFails).builtinFamily, .llama3)
        // A working model template is used as is.
        let smol = try ChatTemplate.fromModel(RealTemplates.smolLM2)
        XCTAssertNil(smol.builtinFamily)
        XCTAssertNil(smol.fallbackReason)
        // Unknown family: a clear error.
        XCTAssertThrowsError(try ChatTemplate.fromModel("{% for m in messages %}[{{ m.role }}]")) { e in
            guard case ChatTemplateError.noTemplate(let m) = e else { return XCTFail("\(e)") }
            XCTAssertTrue(m.contains("not a recognised family"), m)
        }
    }

    func testResolve() throws {
        XCTAssertEqual(try ChatTemplate.resolve(override: "chatml", modelTemplate: RealTemplates.llama32).builtinFamily, .chatml)
        XCTAssertEqual(try ChatTemplate.resolve(override: "LLAMA3", modelTemplate: nil).builtinFamily, .llama3)
        XCTAssertNil(ChatTemplate.named("vicuna"))
        // Literal Jinja.
        let lit = try ChatTemplate.resolve(override: "{% for m in messages %}{{ m.content }};{% endfor %}", modelTemplate: nil)
        XCTAssertEqual(try lit.render(messages: [U1, A1], addGenerationPrompt: false, bosToken: "", eosToken: ""), "What is the capital of France?; Paris is the capital.\n;")
        // A file.
        let path = NSTemporaryDirectory() + "tessera-chat-template-\(getpid()).jinja"
        try RealTemplates.smolLM2.write(toFile: path, atomically: true, encoding: .utf8)
        defer { try? FileManager.default.removeItem(atPath: path) }
        let file = try ChatTemplate.resolve(override: path, modelTemplate: RealTemplates.llama32)
        XCTAssertEqual(file.source, RealTemplates.smolLM2)
        // The model's template when there is no override.
        let model = try ChatTemplate.resolve(override: nil, modelTemplate: RealTemplates.llama32)
        XCTAssertEqual(try model.render(messages: [U1], addGenerationPrompt: true, bosToken: "<|begin_of_text|>", eosToken: "", dateString: "26 Jul 2024"), Expected.llama32User)
        // Errors.
        XCTAssertThrowsError(try ChatTemplate.resolve(override: "vicuna", modelTemplate: nil)) { e in
            XCTAssertTrue("\(e)".contains("unknown chat template 'vicuna'"), "\(e)")
        }
        XCTAssertThrowsError(try ChatTemplate.resolve(override: nil, modelTemplate: nil)) { e in
            guard case ChatTemplateError.noTemplate = e else { return XCTFail("\(e)") }
        }
        XCTAssertThrowsError(try ChatTemplate.resolve(override: "{% if %}", modelTemplate: nil)) { e in
            guard case ChatTemplateError.syntax = e else { return XCTFail("\(e)") }
        }
    }
}
