// swift-tools-version:6.0
import PackageDescription

// Tessera: a compact Swift runtime for ultra-low-bit LLMs on edge CPUs.
//
// Module layering (data flows one way):
//   KernelsC  - C kernels (scalar references + AVX2/FMA paths chosen at run time), thread pool
//   Kernels   - Swift face of the kernels: ThreadPool, fp32 GEMV/GEMM, dequantisation
//   Runtime   - formats (GGUF, safetensors, HF folders), tokenizer, Llama model, generation, eval
//   Calibrate - TesseraQ post-training quantization
//   chat / tessera - command-line programs (argument parsing and terminal UX only)
let package = Package(
    name: "Tessera",
    products: [
        .executable(name: "chat", targets: ["chat"]),
        .executable(name: "tessera", targets: ["tessera"]),
        .executable(name: "bench", targets: ["bench"]),
        .library(name: "Runtime", targets: ["Runtime"]),
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
        .target(
            name: "KernelsC", dependencies: ["CNuma"], path: "Sources/KernelsC"),
        .target(name: "Kernels", dependencies: ["KernelsC", "COpenBLAS"], path: "Sources/Kernels"),
        .target(name: "Runtime", dependencies: ["Kernels"], path: "Sources/Runtime"),
        .target(name: "Calibrate", dependencies: ["Runtime", "Kernels"], path: "Sources/Calibrate"),
        .target(
            name: "CLISupport",
            dependencies: [.product(name: "ArgumentParser", package: "swift-argument-parser")],
            path: "Sources/CLISupport"),
        .executableTarget(
            name: "chat",
            dependencies: ["Runtime", "CLISupport", .product(name: "ArgumentParser", package: "swift-argument-parser")],
            path: "Sources/chat"),
        .executableTarget(
            name: "tessera",
            dependencies: ["Runtime", "Calibrate", "CLISupport", .product(name: "ArgumentParser", package: "swift-argument-parser")],
            path: "Sources/tessera"),
        .executableTarget(
            name: "bench",
            dependencies: ["Runtime", "CLISupport", .product(name: "ArgumentParser", package: "swift-argument-parser")],
            path: "bench/Sources"),
        .testTarget(
            name: "TesseraTests", dependencies: ["Runtime", "Kernels", "KernelsC", "Calibrate"], path: "Tests/TesseraTests"),
    ],
    swiftLanguageModes: [.v5]
)
