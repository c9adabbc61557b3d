import Tokenizer
import Architecture
import Core
import Foundation

/// Opens whatever model a user points at: a Hugging Face folder or a GGUF file (the packed
/// Tessera format will also be GGUF-based).
public enum ModelLoader {
    public static func open(_ path: String) throws -> ModelSource {
        var isDir: ObjCBool = false
        guard FileManager.default.fileExists(atPath: path, isDirectory: &isDir) else {
            throw FormatError.cannotOpen(path: path, reason: "no such file or directory")
        }
        if isDir.boolValue { return try HFModelSource(folder: path) }

        let file = try MappedFile(path: path)
        guard file.size >= 4 else {
            throw FormatError.truncated(path: path, what: "file magic", offset: 0, needed: 4, fileSize: file.size)
        }
        let magic = UInt32(littleEndian: file.base.loadUnaligned(as: UInt32.self))
        if magic == GGUFFile.magic {
            let gguf = try GGUFFile(file: file)
            if gguf.metadata["tessera.format_version"] != nil { return try PackedModelSource(gguf: gguf) }
            return try GGUFModelSource(gguf: gguf)
        }

        if path.hasSuffix(".safetensors") || path.hasSuffix(".json") {
            let folder = (path as NSString).deletingLastPathComponent
            throw FormatError.cannotOpen(path: path, reason: "this is one file of a Hugging Face model; pass its folder (\(folder.isEmpty ? "." : folder)) instead")
        }
        let bytes = (0..<4).map { file.base.load(fromByteOffset: $0, as: UInt8.self) }
        let shown = bytes.map { (32..<127).contains($0) ? String(UnicodeScalar($0)) : "\\x" + String($0, radix: 16) }.joined()
        throw FormatError.badMagic(path: path, found: "'\(shown)'", expected: "GGUF")
    }
}
