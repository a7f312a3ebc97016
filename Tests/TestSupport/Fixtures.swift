import Foundation
import Store
import TensorCore

/// A PyTorch-produced fixture (tools/make_fixtures.py) from a test target's bundle:
/// `Fixtures/NAME.safetensors`, every tensor as Float32. Pass the target's `Bundle.module`.
public func loadFixture(_ name: String, from bundle: Bundle) throws -> [String: Tensor] {
    guard let url = bundle.url(forResource: name, withExtension: "safetensors", subdirectory: "Fixtures") else {
        throw SafeTensorsError.unreadable(path: "Fixtures/\(name).safetensors", reason: "missing from the test bundle")
    }
    return try SafeTensors.read(path: url.path)
}
