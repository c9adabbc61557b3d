import Foundation
import XCTest
@testable import Engine

/// Builds synthetic Hugging Face Llama folders (LLaMA-3.2-like config, tiny dimensions).
struct SyntheticHF {
    static let hidden = 64, layers = 2, heads = 4, kvHeads = 2, ffn = 128, vocab = 300, headDim = 16

    static func llama32Config(tie: Bool? = true) -> [String: Any] {
        var c: [String: Any] = [
            "architectures": ["LlamaForCausalLM"], "model_type": "llama",
            "hidden_size": hidden, "intermediate_size": ffn, "num_hidden_layers": layers,
            "num_attention_heads": heads, "num_key_value_heads": kvHeads, "head_dim": headDim,
            "vocab_size": vocab, "max_position_embeddings": 131072, "rope_theta": 500000.0,
            "rms_norm_eps": 1e-5, "hidden_act": "silu", "attention_bias": false, "mlp_bias": false,
            "bos_token_id": 1, "eos_token_id": [2, 3], "torch_dtype": "bfloat16",
            "rope_scaling": ["rope_type": "llama3", "factor": 32.0, "low_freq_factor": 1.0,
                             "high_freq_factor": 4.0, "original_max_position_embeddings": 8192],
        ]
        if let tie { c["tie_word_embeddings"] = tie }
        return c
    }

    /// HF tensor names and shapes of the synthetic model.
    static func tensorShapes(lmHead: Bool) -> [(String, [Int])] {
        var list: [(String, [Int])] = [("model.embed_tokens.weight", [vocab, hidden])]
        for l in 0..<layers {
            let p = "model.layers.\(l)."
            list += [(p + "input_layernorm.weight", [hidden]),
                     (p + "self_attn.q_proj.weight", [heads * headDim, hidden]),
                     (p + "self_attn.k_proj.weight", [kvHeads * headDim, hidden]),
                     (p + "self_attn.v_proj.weight", [kvHeads * headDim, hidden]),
                     (p + "self_attn.o_proj.weight", [hidden, heads * headDim]),
                     (p + "post_attention_layernorm.weight", [hidden]),
                     (p + "mlp.gate_proj.weight", [ffn, hidden]),
                     (p + "mlp.up_proj.weight", [ffn, hidden]),
                     (p + "mlp.down_proj.weight", [hidden, ffn])]
        }
        list.append(("model.norm.weight", [hidden]))
        if lmHead { list.append(("lm_head.weight", [vocab, hidden])) }
        return list
    }

    /// Random values exactly representable in F32, F16 and BF16 (8-bit mantissa, |x| in [2^-10, 4)).
    static func values(_ n: Int, _ rng: inout FormatTestRNG) -> [Float] {
        (0..<n).map { _ in
            let m = Float(Int.random(in: 128..<256, using: &rng)) / 128
            let e = Int.random(in: -10...1, using: &rng)
            return (Bool.random(using: &rng) ? 1 : -1) * m * Float(sign: .plus, exponent: e, significand: 1)
        }
    }

    /// Writes config.json, weights (two shards plus index, or one model.safetensors) and a
    /// tokenizer_config.json; returns the HF tensors written.
    @discardableResult
    static func write(to dir: FormatTempDir, config: [String: Any] = llama32Config(), sharded: Bool = true,
                      lmHead: Bool = false, skip: Set<String> = [], extra: [(String, [Int])] = [],
                      shapeOverride: [String: [Int]] = [:], seed: UInt64 = 11) throws -> [String: [Float]] {
        let json = try JSONSerialization.data(withJSONObject: config, options: [.prettyPrinted, .sortedKeys])
        try json.write(to: URL(fileURLWithPath: dir.file("config.json")))
        try dir.write("tokenizer_config.json", #"{"bos_token": "<|begin_of_text|>", "chat_template": "{{ bos_token }}{% for m in messages %}{{ m.content }}{% endfor %}"}"#)

        var rng = FormatTestRNG(seed: seed)
        var written: [String: [Float]] = [:]
        var shard1: [SafetensorsWriter.Tensor] = [], shard2: [SafetensorsWriter.Tensor] = []
        let dtypes: [SafetensorsDType] = [.bf16, .f16, .f32]
        for (i, (name, shape0)) in (tensorShapes(lmHead: lmHead) + extra).enumerated() where !skip.contains(name) {
            let shape = shapeOverride[name] ?? shape0
            let v = values(shape.reduce(1, *), &rng)
            written[name] = v
            let t = SafetensorsWriter.Tensor(name: name, shape: shape, values: v, dtype: dtypes[i % 3])
            if name.hasPrefix("model.layers.0.") || name == "model.embed_tokens.weight" { shard1.append(t) } else { shard2.append(t) }
        }
        if sharded {
            let names = ["model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors"]
            try SafetensorsWriter.write(tensors: shard1, metadata: ["format": "pt"], to: dir.file(names[0]))
            try SafetensorsWriter.write(tensors: shard2, metadata: ["format": "pt"], to: dir.file(names[1]))
            var map: [String: String] = [:]
            for t in shard1 { map[t.name] = names[0] }
            for t in shard2 { map[t.name] = names[1] }
            let index: [String: Any] = ["metadata": ["total_size": 12345], "weight_map": map]
            try JSONSerialization.data(withJSONObject: index, options: [.sortedKeys])
                .write(to: URL(fileURLWithPath: dir.file("model.safetensors.index.json")))
        } else {
            try SafetensorsWriter.write(tensors: shard1 + shard2, metadata: ["format": "pt"], to: dir.file("model.safetensors"))
        }
        return written
    }
}

final class HFLoaderTests: XCTestCase {
    var dir: FormatTempDir!
    override func setUpWithError() throws { dir = try FormatTempDir("hf") }
    override func tearDown() { dir.remove() }

    /// Llama-3 frequency factors the way transformers computes them (new inv_freq), in float64.
    func handComputedLlama3Factors() -> [Double] {
        let base = 500000.0, d = 16.0, factor = 32.0, low = 1.0, high = 4.0, original = 8192.0
        return (0..<8).map { i -> Double in
            let invFreq = pow(base, -2 * Double(i) / d)
            let wavelength = 2 * Double.pi / invFreq
            let scaled: Double
            if wavelength < original / high {
                scaled = invFreq
            } else if wavelength > original / low {
                scaled = invFreq / factor
            } else {
                let smooth = (original / wavelength - low) / (high - low)
                scaled = (1 - smooth) * invFreq / factor + smooth * invFreq
            }
            return invFreq / scaled
        }
    }

    func testShardedLlama32FolderLoads() throws {
        let written = try SyntheticHF.write(to: dir)
        let src = try HFModelSource(folder: dir.path)
        let c = src.config
        XCTAssertEqual(c.blockCount, 2)
        XCTAssertEqual(c.hidden, 64)
        XCTAssertEqual(c.ffn, 128)
        XCTAssertEqual(c.heads, 4)
        XCTAssertEqual(c.kvHeads, 2)
        XCTAssertEqual(c.headDim, 16)
        XCTAssertEqual(c.vocab, 300)
        XCTAssertEqual(c.contextLength, 131072)
        XCTAssertEqual(c.ropeBase, 500000)
        XCTAssertEqual(c.rmsEps, 1e-5)
        XCTAssertTrue(c.tiedEmbeddings)
        let factors = try XCTUnwrap(c.ropeFrequencyFactors)
        let expected = handComputedLlama3Factors()
        XCTAssertEqual(factors.count, expected.count)
        for (f, e) in zip(factors, expected) { XCTAssertEqual(Double(f), e, accuracy: e * 1e-6) }
        // The three regimes all occur at these dimensions.
        XCTAssertEqual(factors.first, 1)
        XCTAssertEqual(factors.last, 32)
        XCTAssertTrue(factors.contains { $0 > 1.5 && $0 < 31 })

        XCTAssertFalse(src.hasTensor(TensorName.output))
        XCTAssertTrue(src.hasTensor(TensorName.block(1, "ffn_down")))
        XCTAssertFalse(src.hasTensor(TensorName.ropeFrequencies))
        XCTAssertEqual(src.tensorShape(TensorName.block(1, "attn_k")), [32, 64])
        XCTAssertEqual(src.tensorShape(TensorName.block(0, "ffn_down")), [64, 128])
        XCTAssertEqual(src.hfName(of: TensorName.block(1, "attn_output")), "model.layers.1.self_attn.o_proj.weight")
        XCTAssertEqual(src.chatTemplate, "{{ bos_token }}{% for m in messages %}{{ m.content }}{% endfor %}")

        // Every tensor decodes to what was written; Q and K come back permuted per head.
        for (hfName, values) in written {
            let name = try XCTUnwrap(HFModelSource.ggufName(hf: hfName))
            let got = try src.floatTensor(name).array
            if hfName.contains("q_proj") || hfName.contains("k_proj") {
                let rows = values.count / 64, nHeads = rows / 16
                var want = [Float](repeating: 0, count: values.count)
                for h in 0..<nHeads {
                    for i in 0..<8 {
                        for j in 0..<2 {
                            for col in 0..<64 { want[(h * 16 + 2 * i + j) * 64 + col] = values[(h * 16 + j * 8 + i) * 64 + col] }
                        }
                    }
                }
                XCTAssertEqual(got, want, hfName)
                XCTAssertNotEqual(got, values, hfName)
            } else {
                XCTAssertEqual(got, values, hfName)
            }
        }
        XCTAssertTrue(try ModelLoader.open(dir.path) is HFModelSource)
    }

    /// HF rotate-half RoPE on HF-layout q equals interleaved RoPE on the permuted q, and
    /// attention scores q·k agree, for Q (4 heads) and K (2 heads), at several positions.
    func testQKPermutationMatchesRotateHalfRoPE() throws {
        let written = try SyntheticHF.write(to: dir)
        let src = try HFModelSource(folder: dir.path)
        let d = 16, half = 8, cols = 64
        let factors = try XCTUnwrap(src.config.ropeFrequencyFactors).map(Double.init)
        var rng = FormatTestRNG(seed: 99)
        let x = rng.floats(cols).map(Double.init)

        func project(_ w: [Float]) -> [Double] {
            (0..<w.count / cols).map { r in (0..<cols).reduce(0.0) { $0 + Double(w[r * cols + $1]) * x[$1] } }
        }
        func theta(_ pos: Int, _ i: Int) -> Double {
            Double(pos) * pow(500000.0, -2 * Double(i) / Double(d)) / factors[i]
        }
        func rotateHalf(_ v: [Double], pos: Int) -> [Double] {
            var out = v
            for h in 0..<v.count / d {
                for i in 0..<half {
                    let a = v[h * d + i], b = v[h * d + i + half], t = theta(pos, i)
                    out[h * d + i] = a * cos(t) - b * sin(t)
                    out[h * d + i + half] = b * cos(t) + a * sin(t)
                }
            }
            return out
        }
        func interleaved(_ v: [Double], pos: Int) -> [Double] {
            var out = v
            for h in 0..<v.count / d {
                for i in 0..<half {
                    let a = v[h * d + 2 * i], b = v[h * d + 2 * i + 1], t = theta(pos, i)
                    out[h * d + 2 * i] = a * cos(t) - b * sin(t)
                    out[h * d + 2 * i + 1] = b * cos(t) + a * sin(t)
                }
            }
            return out
        }

        for layer in 0..<2 {
            let qHF = project(written["model.layers.\(layer).self_attn.q_proj.weight"]!)
            let kHF = project(written["model.layers.\(layer).self_attn.k_proj.weight"]!)
            let qG = project(try src.floatTensor(TensorName.block(layer, "attn_q")).array)
            let kG = project(try src.floatTensor(TensorName.block(layer, "attn_k")).array)
            for (qPos, kPos) in [(0, 0), (1, 0), (7, 3), (100, 42), (5000, 4999)] {
                let qa = rotateHalf(qHF, pos: qPos), qb = interleaved(qG, pos: qPos)
                let ka = rotateHalf(kHF, pos: kPos), kb = interleaved(kG, pos: kPos)
                // Same rotated components, just stored in the other order.
                for h in 0..<qHF.count / d {
                    for i in 0..<half {
                        for j in 0..<2 {
                            XCTAssertEqual(qb[h * d + 2 * i + j], qa[h * d + j * half + i], accuracy: 1e-9)
                        }
                    }
                }
                for (a, b) in zip(ka.sorted(), kb.sorted()) { XCTAssertEqual(a, b, accuracy: 1e-9) }
                // And identical attention scores (query head h uses kv head h / 2).
                for h in 0..<4 {
                    let kv = h / 2
                    let sa = (0..<d).reduce(0.0) { $0 + qa[h * d + $1] * ka[kv * d + $1] }
                    let sb = (0..<d).reduce(0.0) { $0 + qb[h * d + $1] * kb[kv * d + $1] }
                    XCTAssertEqual(sa, sb, accuracy: 1e-9 * max(1, abs(sa)))
                }
            }
        }
    }

    func testTyingAndSingleFileLayout() throws {
        // tie_word_embeddings false with lm_head: untied, output.weight is lm_head.
        let written = try SyntheticHF.write(to: dir, config: SyntheticHF.llama32Config(tie: false), sharded: false, lmHead: true)
        let untied = try HFModelSource(folder: dir.path)
        XCTAssertFalse(untied.config.tiedEmbeddings)
        XCTAssertEqual(try untied.floatTensor(TensorName.output).array, written["lm_head.weight"])

        // Absent tie_word_embeddings defaults to false; without lm_head the model is tied anyway.
        let dir2 = try FormatTempDir("hf-untied")
        defer { dir2.remove() }
        try SyntheticHF.write(to: dir2, config: SyntheticHF.llama32Config(tie: nil), sharded: false, lmHead: false)
        let tied = try HFModelSource(folder: dir2.path)
        XCTAssertTrue(tied.config.tiedEmbeddings)
        XCTAssertFalse(tied.hasTensor(TensorName.output))

        // tie_word_embeddings true with a redundant lm_head: tied, lm_head ignored.
        let dir3 = try FormatTempDir("hf-both")
        defer { dir3.remove() }
        try SyntheticHF.write(to: dir3, config: SyntheticHF.llama32Config(tie: true), lmHead: true)
        XCTAssertFalse(try HFModelSource(folder: dir3.path).hasTensor(TensorName.output))
    }

    func testChatTemplateSources() throws {
        try SyntheticHF.write(to: dir)
        try dir.write("tokenizer_config.json", #"{"chat_template": [{"name": "tool_use", "template": "T"}, {"name": "default", "template": "D"}]}"#)
        XCTAssertEqual(try HFModelSource(folder: dir.path).chatTemplate, "D")
        try dir.write("tokenizer_config.json", #"{"bos_token": "<s>"}"#)
        XCTAssertNil(try HFModelSource(folder: dir.path).chatTemplate)
        try dir.write("chat_template.jinja", "{{ jinja }}")
        XCTAssertEqual(try HFModelSource(folder: dir.path).chatTemplate, "{{ jinja }}")
    }

    func testRopeVariantsInConfig() throws {
        var config = SyntheticHF.llama32Config()
        config["rope_scaling"] = NSNull()
        config.removeValue(forKey: "rope_theta")
        try SyntheticHF.write(to: dir, config: config)
        let plain = try HFModelSource(folder: dir.path).config
        XCTAssertNil(plain.ropeFrequencyFactors)
        XCTAssertEqual(plain.ropeBase, 10000)

        // transformers 5 style: rope_parameters holds the theta and the scaling (legacy "type" key).
        config.removeValue(forKey: "rope_scaling")
        config["rope_parameters"] = ["type": "llama3", "rope_theta": 500000.0, "factor": 32, "low_freq_factor": 1,
                                     "high_freq_factor": 4, "original_max_position_embeddings": 8192]
        try SyntheticHF.write(to: dir, config: config)
        let v5 = try HFModelSource(folder: dir.path).config
        XCTAssertEqual(v5.ropeBase, 500000)
        XCTAssertEqual(v5.ropeFrequencyFactors?.last, 32)
    }

    func testErrorsNameTheProblem() throws {
        func message(_ body: @autoclosure () throws -> Any, file: StaticString = #filePath, line: UInt = #line) -> String {
            guard let e = assertFormatError(try body(), file: file, line: line) else { return "" }
            return e.description
        }
        func check(_ m: String, _ fragments: String..., file: StaticString = #filePath, line: UInt = #line) {
            for f in fragments { XCTAssertTrue(m.contains(f), "'\(m)' lacks '\(f)'", file: file, line: line) }
        }
        // Empty folder: config.json.
        check(message(try HFModelSource(folder: dir.path)), "config.json", "missing")
        check(message(try HFModelSource(folder: dir.file("nope"))), "no such file")
        // Config but no weights.
        let config = try JSONSerialization.data(withJSONObject: SyntheticHF.llama32Config())
        try config.write(to: URL(fileURLWithPath: dir.file("config.json")))
        check(message(try HFModelSource(folder: dir.path)), "model.safetensors", "missing")

        try SyntheticHF.write(to: dir)
        // Missing shard.
        try FileManager.default.removeItem(atPath: dir.file("model-00002-of-00002.safetensors"))
        check(message(try HFModelSource(folder: dir.path)), "model-00002-of-00002.safetensors", "missing")
        try SyntheticHF.write(to: dir)
        // No tokenizer.json: makeTokenizer names it (without reaching the tokenizer).
        check(message(try HFModelSource(folder: dir.path).makeTokenizer()), "tokenizer.json", "missing")
        // Bad JSON.
        try dir.write("config.json", "{\"hidden_size\": 64,")
        check(message(try HFModelSource(folder: dir.path)), "config.json", "not valid JSON")

        func withConfig(_ edit: (inout [String: Any]) -> Void, skip: Set<String> = [], extra: [(String, [Int])] = [],
                        shapes: [String: [Int]] = [:], file: StaticString = #filePath, line: UInt = #line) throws -> String {
            var c = SyntheticHF.llama32Config()
            edit(&c)
            try SyntheticHF.write(to: dir, config: c, skip: skip, extra: extra, shapeOverride: shapes)
            return message(try HFModelSource(folder: dir.path), file: file, line: line)
        }
        check(try withConfig { $0["rope_scaling"] = ["rope_type": "yarn", "factor": 4.0] }, "unsupported rope_scaling type yarn")
        check(try withConfig { $0["rope_scaling"] = ["type": "linear", "factor": 2.0] }, "unsupported rope_scaling type linear")
        check(try withConfig { $0["architectures"] = ["MistralForCausalLM"]; $0["model_type"] = "mistral" },
              "architecture MistralForCausalLM is not supported (Tessera runs llama)")
        check(try withConfig { $0.removeValue(forKey: "hidden_size") }, "hidden_size", "missing")
        check(try withConfig { $0["num_key_value_heads"] = 1.5 }, "num_key_value_heads", "expected an integer")
        check(try withConfig { $0["rope_scaling"] = ["rope_type": "llama3", "factor": 32.0] }, "rope_scaling.low_freq_factor")
        check(try withConfig { $0["attention_bias"] = true }, "attention_bias")

        // Shape disagreement with the config, and a missing tensor.
        _ = try withConfig { $0["intermediate_size"] = 96 }
        XCTAssertEqual(assertFormatError(try HFModelSource(folder: dir.path)),
                       .shapeMismatch(tensor: "blk.0.ffn_gate.weight", expected: [96, 64], found: [128, 64]))
        let kName = "model.layers.1.self_attn.k_proj.weight"
        _ = try withConfig({ _ in }, shapes: [kName: [64, 64]])
        XCTAssertEqual(assertFormatError(try HFModelSource(folder: dir.path)),
                       .shapeMismatch(tensor: "blk.1.attn_k.weight", expected: [32, 64], found: [64, 64]))
        _ = try withConfig({ _ in }, skip: ["model.layers.1.mlp.up_proj.weight"])
        XCTAssertEqual(assertFormatError(try HFModelSource(folder: dir.path)),
                       .missingTensor(path: dir.path, tensor: "blk.1.ffn_up.weight"))
        // Index lists a tensor its shard does not hold.
        try SyntheticHF.write(to: dir)
        try dir.write("model.safetensors.index.json",
                      #"{"weight_map": {"model.norm.weight": "model-00001-of-00002.safetensors"}}"#)
        check(message(try HFModelSource(folder: dir.path)), "model.norm.weight", "missing", "model-00001-of-00002")
        // A layer the config does not have, and a bias.
        check(try withConfig({ $0["num_hidden_layers"] = 1 }), "layer 1", "num_hidden_layers = 1")
        check(try withConfig({ _ in }, extra: [("model.layers.0.self_attn.q_proj.bias", [64])]), "q_proj.bias", "biases")
    }

    func testNameMapping() {
        XCTAssertEqual(HFModelSource.ggufName(hf: "model.embed_tokens.weight"), "token_embd.weight")
        XCTAssertEqual(HFModelSource.ggufName(hf: "model.norm.weight"), "output_norm.weight")
        XCTAssertEqual(HFModelSource.ggufName(hf: "lm_head.weight"), "output.weight")
        let parts = ["input_layernorm": "attn_norm", "self_attn.q_proj": "attn_q", "self_attn.k_proj": "attn_k",
                     "self_attn.v_proj": "attn_v", "self_attn.o_proj": "attn_output", "post_attention_layernorm": "ffn_norm",
                     "mlp.gate_proj": "ffn_gate", "mlp.up_proj": "ffn_up", "mlp.down_proj": "ffn_down"]
        for (hf, gguf) in parts {
            XCTAssertEqual(HFModelSource.ggufName(hf: "model.layers.17.\(hf).weight"), "blk.17.\(gguf).weight")
        }
        XCTAssertNil(HFModelSource.ggufName(hf: "model.layers.01.mlp.up_proj.weight"))
        XCTAssertNil(HFModelSource.ggufName(hf: "model.layers.+1.mlp.up_proj.weight"))
        XCTAssertNil(HFModelSource.ggufName(hf: "model.layers.0.self_attn.rotary_emb.inv_freq"))
        XCTAssertNil(HFModelSource.ggufName(hf: "model.layers.0.mlp.up_proj.weight.extra"))
    }
}
