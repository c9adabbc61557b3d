// TEMPORARY until the chat-template branch lands.
public struct ChatMessage: Equatable { public var role: String; public var content: String
    public init(role: String, content: String) { self.role = role; self.content = content } }
public struct ChatTemplate {
    public static func resolve(override: String?, modelTemplate: String?) throws -> ChatTemplate { fatalError() }
    public func render(messages: [ChatMessage], addGenerationPrompt: Bool, bosToken: String, eosToken: String) throws -> String { fatalError() }
}
