// swift-tools-version:6.0
import PackageDescription

// Tessera: a compact Swift runtime for ultra-low-bit LLMs on edge CPUs.
//
// Targets, lowest first; every edge points down and the compiler refuses a back-edge (a target
// can import only what it lists, directly or through a dependency). docs/ARCHITECTURE.md has
// the data path and which target owns which behaviour.
//   Core          buffers, canonical quantized tensors, errors, JSON helpers, atomic writes
//   KernelsC      C kernels: dispatch, thread pool, GEMV/GEMM per scheme and ISA, load-time repack
//   Kernels       the Swift face of KernelsC: LinearWeights implementations, ThreadPool, ops
//   Quant         the one RTN grid, ggml block conversion (stored forms, no kernels)
//   ChatTemplate  the Jinja subset and chat templates
//   Tokenizer     byte-level BPE, pre-tokenizers, tiktoken, tokenizer.json
//   Architecture  LlamaConfig and the one description of the Llama block (names, shapes, roles)
//   Formats       GGUF, safetensors, HF folders, the packed file; ModelSource = stored tensors
//   Model         the Llama forward pass and its op functions, KV cache, inference session
//   Engine        the one binder (stored weights -> LinearWeights), loading, sampling, chat
//   Eval          perplexity, zero-shot tasks
//   Calibrate     TesseraQ and the end-to-end tune
//   chat / tessera / bench: argument parsing and terminal UX only
let package = Package(
    name: "Tessera",
    products: [
        .executable(name: "chat", targets: ["chat"]),
        .executable(name: "tessera", targets: ["tessera"]),
        .executable(name: "bench", targets: ["bench"]),
        .library(name: "Tessera", targets: ["Engine", "Eval", "Calibrate"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.5.0"),
    ],
    targets: [
        .systemLibrary(
            name: "COpenBLAS", path: "Sources/COpenBLAS", pkgConfig: "openblas",
            providers: [.apt(["libopenblas-dev"])]),
        .systemLibrary(
            name: "CNuma", path: "Sources/CNuma", pkgConfig: "numa",
            providers: [.apt(["libnuma-dev"])]),
        .target(name: "Core", path: "Sources/Core"),
        .target(name: "KernelsC", dependencies: ["CNuma"], path: "Sources/KernelsC"),
        .target(name: "Kernels", dependencies: ["Core", "KernelsC", "COpenBLAS"], path: "Sources/Kernels"),
        .target(name: "Quant", dependencies: ["Core"], path: "Sources/Quant"),
        .target(name: "ChatTemplate", dependencies: ["Core"], path: "Sources/ChatTemplate"),
        .target(name: "Tokenizer", dependencies: ["Core"], path: "Sources/Tokenizer"),
        .target(name: "Architecture", dependencies: ["Core"], path: "Sources/Architecture"),
        .target(name: "Formats", dependencies: ["Core", "Architecture", "Tokenizer"], path: "Sources/Formats"),
        .target(name: "Model", dependencies: ["Core", "Architecture", "Kernels"], path: "Sources/Model"),
        .target(
            name: "Engine", dependencies: ["Model", "Formats", "Quant", "Tokenizer", "ChatTemplate"],
            path: "Sources/Engine"),
        .target(name: "Eval", dependencies: ["Engine"], path: "Sources/Eval"),
        .target(name: "Calibrate", dependencies: ["Engine", "Eval"], path: "Sources/Calibrate"),
        .target(
            name: "CLISupport",
            dependencies: [.product(name: "ArgumentParser", package: "swift-argument-parser")],
            path: "Sources/CLISupport"),
        .executableTarget(
            name: "chat",
            dependencies: ["Engine", "CLISupport", .product(name: "ArgumentParser", package: "swift-argument-parser")],
            path: "Sources/chat"),
        .executableTarget(
            name: "tessera",
            dependencies: ["Engine", "Eval", "Calibrate", "CLISupport", .product(name: "ArgumentParser", package: "swift-argument-parser")],
            path: "Sources/tessera"),
        .executableTarget(
            name: "bench",
            dependencies: ["Engine", "CLISupport", .product(name: "ArgumentParser", package: "swift-argument-parser")],
            path: "bench/Sources"),
        .testTarget(
            name: "TesseraTests",
            dependencies: ["Core", "KernelsC", "Kernels", "Quant", "ChatTemplate", "Tokenizer", "Architecture", "Formats", "Model", "Engine", "Eval", "Calibrate"], path: "Tests/TesseraTests"),
    ],
    swiftLanguageModes: [.v5]
)
