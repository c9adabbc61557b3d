// TEMPORARY until the loader branch lands.
public enum ModelLoader {
    public static func open(_ path: String) throws -> ModelSource { fatalError("pending") }
}
