// swift-tools-version:6.0
import PackageDescription

// Layers (imports only point down): workbench -> Store -> TensorCore -> CBLAS / CHDF5 / CZlib.
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
    ],
    targets: [
        .systemLibrary(name: "CBLAS", path: "Sources/CBLAS", pkgConfig: "openblas",
                       providers: [.apt(["libopenblas-dev"])]),
        .systemLibrary(name: "CHDF5", path: "Sources/CHDF5", pkgConfig: "hdf5-serial",
                       providers: [.apt(["libhdf5-dev"])]),
        .systemLibrary(name: "CZlib", path: "Sources/CZlib", pkgConfig: "zlib",
                       providers: [.apt(["zlib1g-dev"])]),
        .target(name: "TensorCore", dependencies: ["CBLAS"]),
        .target(name: "Store", dependencies: ["TensorCore", "CHDF5", "CZlib"]),
        .executableTarget(name: "workbench", dependencies: [
            "TensorCore", "Store",
            .product(name: "ArgumentParser", package: "swift-argument-parser"),
        ]),
        .testTarget(name: "TensorCoreTests", dependencies: ["TensorCore", "Store"],
                    resources: [.copy("Fixtures")]),
        .testTarget(name: "StoreTests", dependencies: ["Store", "TensorCore"]),
    ],
    swiftLanguageModes: [.v5]
)
