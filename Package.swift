// swift-tools-version:6.0
import Foundation
import PackageDescription

/// AVX2 and FMA code generation for the numeric targets when the building machine has them
/// (read from /proc/cpuinfo), with HAS_FMA defined so kernels may use fused multiply-adds; where
/// it also has AVX-512F, sixteen-lane code as well, with HAS_AVX512 defined so element-wise kernels
/// run sixteen lanes at a time (`WideVec`; the same bits per lane as eight). Elsewhere the portable
/// baseline is built.
let vectorSettings: [SwiftSetting] = {
    #if arch(x86_64) && os(Linux)
    guard let cpuinfo = try? String(contentsOfFile: "/proc/cpuinfo", encoding: .utf8),
          let flagsLine = cpuinfo.split(separator: "\n").first(where: { $0.hasPrefix("flags") }) else { return [] }
    let flags = Set(flagsLine.split(separator: " ").map(String.init))
    guard flags.contains("avx2") && flags.contains("fma") else { return [] }
    let wide = flags.contains("avx512f")
    return [.unsafeFlags(["-Xcc", "-mavx2", "-Xcc", "-mfma"] + (wide ? ["-Xcc", "-mavx512f"] : [])), .define("HAS_FMA")]
        + (wide ? [.define("HAS_AVX512")] : [])
    #else
    return []
    #endif
}()

// Layers (imports only point down): workbench -> Runner -> Evaluation -> Encoders -> NN -> TensorCore -> CBLAS (and CSpin);
// Cluster (Open MPI through CMPI) sits on TensorCore and installs its collectives as Distributed.world under mpirun;
// Data and Store sit on TensorCore (and CWorkbenchZlib / CHDF5; Data decodes images through CTurboJPEG, CCodecs (libpng and libjpeg shims) and CWebP).
// See docs/ARCHITECTURE.md.
let package = Package(
    name: "SwiftViTWorkbench",
    platforms: [.macOS(.v13)],
    products: [
        .executable(name: "workbench", targets: ["workbench"]),
        .library(name: "TensorCore", targets: ["TensorCore"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.5.0"),
        .package(url: "https://github.com/jpsim/Yams", from: "6.2.2"),
        .package(url: "https://github.com/weichsel/ZIPFoundation", from: "0.9.20"),
        .package(url: "https://github.com/swiftcsv/SwiftCSV", from: "0.10.0"),
    ],
    targets: [
        .systemLibrary(name: "CBLAS", path: "Sources/CBLAS", pkgConfig: "openblas",
                       providers: [.apt(["libopenblas-dev"])]),
        .systemLibrary(name: "CHDF5", path: "Sources/CHDF5", pkgConfig: "hdf5-serial",
                       providers: [.apt(["libhdf5-dev"])]),
        .systemLibrary(name: "CWorkbenchZlib", path: "Sources/CWorkbenchZlib", pkgConfig: "zlib",
                       providers: [.apt(["zlib1g-dev"])]),
        .systemLibrary(name: "CTurboJPEG", path: "Sources/CTurboJPEG", pkgConfig: "libturbojpeg",
                       providers: [.apt(["libturbojpeg0-dev"])]),
        .systemLibrary(name: "CPNG", path: "Sources/CPNG", pkgConfig: "libpng",
                       providers: [.apt(["libpng-dev"])]),
        .systemLibrary(name: "CWebP", path: "Sources/CWebP", pkgConfig: "libwebp",
                       providers: [.apt(["libwebp-dev"])]),
        .systemLibrary(name: "CJPEG", path: "Sources/CJPEG", pkgConfig: "libjpeg",
                       providers: [.apt(["libjpeg62-turbo-dev"])]),
        .systemLibrary(name: "CMPI", path: "Sources/CMPI", pkgConfig: "ompi-c",
                       providers: [.apt(["libopenmpi-dev"])]),
        .target(name: "CCodecs", dependencies: ["CPNG", "CJPEG"]),
        .target(name: "CSpin"),
        .target(name: "CProcess"),
        .target(name: "TensorCore", dependencies: ["CBLAS", "CSpin"], swiftSettings: vectorSettings),
        .target(name: "NN", dependencies: ["TensorCore"]),
        .target(name: "Encoders", dependencies: ["NN", "TensorCore"]),
        .target(name: "Objectives", dependencies: ["Encoders", "NN", "TensorCore"]),
        .target(name: "Data", dependencies: ["TensorCore", "CWorkbenchZlib", "CTurboJPEG", "CCodecs", "CWebP"]),
        .target(name: "Evaluation", dependencies: ["Data", "Encoders", "NN", "TensorCore"]),
        .target(name: "Cluster", dependencies: ["CMPI", "TensorCore"]),
        .target(name: "Store", dependencies: ["TensorCore", "CHDF5", "CWorkbenchZlib", .product(name: "ZIPFoundation", package: "ZIPFoundation")]),
        .target(name: "Runner", dependencies: [
            "Data", "Encoders", "Evaluation", "NN", "Objectives", "Store", "TensorCore", .product(name: "Yams", package: "Yams"),
            .product(name: "SwiftCSV", package: "SwiftCSV"), "CProcess", "Cluster",
        ]),
        .executableTarget(name: "workbench", dependencies: [
            "TensorCore", "Store", "NN", "Encoders", "Data", "Evaluation", "Runner", "Cluster",
            .product(name: "ArgumentParser", package: "swift-argument-parser"),
        ]),
        .target(name: "TestSupport", dependencies: ["TensorCore", "Store"], path: "Tests/TestSupport"),
        .testTarget(name: "TensorCoreTests", dependencies: ["TensorCore", "Store", "TestSupport"],
                    resources: [.copy("Fixtures")], swiftSettings: vectorSettings),
        .testTarget(name: "StoreTests", dependencies: ["Store", "TensorCore"]),
        .testTarget(name: "TrainingTests", dependencies: ["Data", "NN", "Evaluation", "Encoders", "Store", "TensorCore", "TestSupport"],
                    resources: [.copy("Fixtures")]),
        .testTarget(name: "ObjectiveTests", dependencies: ["Objectives", "Data", "Encoders", "NN", "Store", "TensorCore", "TestSupport"],
                    resources: [.copy("Fixtures")]),
        .testTarget(name: "RunnerTests", dependencies: ["Runner", "Evaluation", "Store", "Data", "NN", "Encoders", "Objectives", "TensorCore", "TestSupport"],
                    resources: [.copy("Fixtures")]),
        .testTarget(name: "EncoderTests", dependencies: ["Encoders", "NN", "Store", "TensorCore", "TestSupport"],
                    resources: [.copy("Fixtures")]),
    ],
    swiftLanguageModes: [.v5]
)
