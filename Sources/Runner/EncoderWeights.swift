import Data
import Encoders
import Foundation
import NN
import TensorCore

/// `encoder.weights`: starts the run's encoder from a weights file before the first stage. The
/// file may be any format `WeightFiles` reads; its tensors are found under `weights_prefix`
/// (default: the file's `encoder_prefix` metadata, else the prefix under which the encoder's
/// names match best: "", "state_dict.", "model.", "module.", "teacher_encoder.net.", ...).
/// Strict: every parameter must be there with its shape, and nothing else may be, except the
/// classification head when `weights_skip_head` asks (other classes). A position table of
/// another length is resampled bicubically, the class token's row kept.
public enum EncoderWeights {
    static let candidatePrefixes = ["", "state_dict.", "model.", "module.", "state_dict.module.", "model.module.", "backbone.",
                                    "encoder.", "teacher_encoder.net.", "online_encoder.net.", "student_encoder.net.", "teacher.", "student."]

    /// What a weights file gives an encoder: its tensors, checked against the encoder (names,
    /// shapes, resampled positions), and a line for the log.
    public struct Fitted {
        public let tensors: [String: Tensor]
        public let report: String

        /// Loads the tensors into an encoder of the architecture they were fitted to.
        public func apply(to encoder: any HiddenLayerEncoder) throws {
            try encoder.load(encoder.stateDict().merging(tensors) { $1 })
        }
    }

    /// Loads the file into `encoder`; returns what was done, for the log.
    public static func load(_ section: EncoderSection, into encoder: any HiddenLayerEncoder, recipeFile: String) throws -> String {
        let fitted = try fit(section, to: encoder, recipeFile: recipeFile)
        do { try fitted.apply(to: encoder) } catch {
            throw RecipeError(file: recipeFile, location: nil, keyPath: "encoder.weights", message: "\(section.weights ?? ""): \(error)")
        }
        return fitted.report
    }

    /// Reads the file and fits its tensors to `encoder`'s names and shapes, without changing the
    /// encoder; every mismatch is a RecipeError naming `recipeFile`.
    public static func fit(_ section: EncoderSection, to encoder: any HiddenLayerEncoder, recipeFile: String) throws -> Fitted {
        guard let path = section.weights else { return Fitted(tensors: [:], report: "") }
        func problem(_ message: String) -> RecipeError { RecipeError(file: recipeFile, location: nil, keyPath: "encoder.weights", message: message) }
        var file: [String: Tensor]
        let metadata: [String: String]
        do {
            file = try WeightFiles.read(path: path)
            metadata = (try? WeightFiles.metadata(path: path)) ?? [:]
        } catch {
            throw problem("\(error)")
        }
        var notes: [String] = []
        // timm resamples a hub checkpoint's positions bicubically with antialiasing (checkpoint_filter_fn)
        // and a Google .npz's bilinearly without (_load_weights); the workbench does as timm would.
        var resampling = PositionResampling.bicubicAntialiased
        if let timm = GoogleViTNames.toTimm(file) {
            file = timm
            resampling = .bilinear
            notes.append("Google ViT names mapped to timm's")
        }
        let expected = encoder.stateDict()
        let prefix = section.weightsPrefix ?? metadata["encoder_prefix"] ?? bestPrefix(file, expected.keys)
        var weights: [String: Tensor] = [:]
        // BatchNorm's num_batches_tracked is torch's bookkeeping, not a weight: the workbench keeps none.
        for (name, tensor) in file where name.hasPrefix(prefix) && !name.hasSuffix(".num_batches_tracked") {
            weights[String(name.dropFirst(prefix.count))] = tensor
        }
        // The head's parameters by name (CrossViT has two heads, so not one prefix).
        let headParameters = Set((encoder.classificationHead?.parameters ?? []).map(ObjectIdentifier.init))
        let headNames = encoder.namedParameters().filter { headParameters.contains(ObjectIdentifier($0.1)) }.map(\.0)
        // The head's modules, as name prefixes (mlp_head.; CrossViT's sm_mlp_head. and lg_mlp_head.).
        var headModules: [String] = []
        for name in headNames {
            let module = (name.split(separator: ".").first.map(String.init) ?? name) + "."
            if !headModules.contains(module) { headModules.append(module) }
        }
        var wanted = Set(expected.keys)
        if section.weightsSkipHead, !headNames.isEmpty {
            wanted.subtract(headNames)
            weights = weights.filter { entry in !headModules.contains { entry.key.hasPrefix($0) } }
            notes.append("the classification head (\(headModules.map { $0 + "*" }.joined(separator: ", "))) keeps its fresh initialisation")
        }
        // A position table for another image size (vit-pytorch's pos_embedding, timm's pos_embed):
        // resampled, the class token's row kept.
        for key in ["pos_embedding", "pos_embed"] {
            if let mine = expected[key], let theirs = weights[key], mine.shape != theirs.shape,
               mine.shape.count == 3, theirs.shape.count == 3, mine.shape[2] == theirs.shape[2],
               let resized = resample(theirs, to: mine.shape, resampling) {
                weights[key] = resized
                notes.append("\(key) resampled \(resampling.rawValue) from \(theirs.shape[1]) to \(mine.shape[1]) positions")
            }
        }
        let missing = wanted.filter { weights[$0] == nil }.sorted()
        let unexpected = Set(weights.keys).subtracting(expected.keys).sorted()
        let mismatched = wanted.compactMap { name -> String? in
            guard let t = weights[name], let e = expected[name], t.shape != e.shape else { return nil }
            return "\(name) is \(t.shape.map(String.init).joined(separator: "x")) in the file, \(e.shape.map(String.init).joined(separator: "x")) here"
        }.sorted()
        if !missing.isEmpty || !unexpected.isEmpty || !mismatched.isEmpty {
            var message = "\(path) does not fit the \(section.kind) encoder"
            if !prefix.isEmpty { message += " (read under the prefix '\(prefix)')" }
            message += ":"
            if !missing.isEmpty { message += " missing \(missing.count) (\(list(missing)));" }
            if !unexpected.isEmpty { message += " unexpected \(unexpected.count) (\(list(unexpected)));" }
            if !mismatched.isEmpty { message += " other shapes: \(list(mismatched));" }
            if let hint = describe(weights.isEmpty ? file : weights, against: section) { message += " \(hint)" }
            if !headModules.isEmpty && (missing + unexpected + mismatched).allSatisfy({ entry in headModules.contains { entry.hasPrefix($0) } }) {
                message += " Only the classification head differs: set encoder.weights_skip_head: true to keep a fresh head."
            } else if weights.isEmpty {
                message += " Nothing matched: set encoder.weights_prefix to the prefix of the encoder's names in the file"
                    + " (its names start \(list(Array(file.keys.sorted().prefix(3)))))."
            }
            throw problem(message)
        }
        let format = (try? WeightFiles.format(of: path).name) ?? "weights"
        return Fitted(tensors: weights.filter { wanted.contains($0.key) },
                      report: "encoder: \(wanted.count) tensors from \(path) (\(format)\(prefix.isEmpty ? "" : ", prefix '\(prefix)'"))"
                          + (notes.isEmpty ? "" : "; " + notes.joined(separator: "; ")))
    }

    static func list(_ items: [String]) -> String {
        items.prefix(4).joined(separator: ", ") + (items.count > 4 ? ", ..." : "")
    }

    /// The prefix under which most of the encoder's names appear in the file.
    static func bestPrefix(_ file: [String: Tensor], _ names: Dictionary<String, Tensor>.Keys) -> String {
        let scored = candidatePrefixes.map { p in (p, names.filter { file[p + $0] != nil }.count) }
        return scored.max { $0.1 < $1.1 }.map { $0.1 > 0 ? $0.0 : "" } ?? ""
    }

    /// What a vit-pytorch ViT state_dict holds, as the keys to set ("the file has 12 blocks of width
    /// 768 and patch 16: set encoder.depth: 12, ...").
    static func describe(_ weights: [String: Tensor], against section: EncoderSection) -> String? {
        let blocks = Set(weights.keys.compactMap { name -> Int? in
            let parts = name.split(separator: ".")
            guard parts.count > 2, parts[0] == "transformer", parts[1] == "layers" else { return nil }
            return Int(parts[2])
        })
        guard !blocks.isEmpty, let embedding = weights["to_patch_embedding.2.weight"], embedding.shape.count == 2 else { return nil }
        let dim = embedding.shape[0], patchValues = embedding.shape[1]
        var facts = ["\(blocks.count) blocks of width \(dim)"]
        var keys = ["encoder.depth: \(blocks.count)", "encoder.dim: \(dim)"]
        for channels in [1, 3] where patchValues % channels == 0 {
            let side = Int(Double(patchValues / channels).squareRoot().rounded())
            if side * side * channels == patchValues {
                facts.append("patch \(side) over \(channels) channel\(channels == 1 ? "" : "s")")
                keys.append("encoder.patch_size: \(side)")
                if channels != 1 { keys.append("data.channels: \(channels)") }
                break
            }
        }
        if let mlp = weights["transformer.layers.0.1.net.1.weight"], mlp.shape.count == 2 { keys.append("encoder.mlp_dim: \(mlp.shape[0])") }
        // The attention's width fixes heads * dim_head, not each of them.
        if let qkv = weights["transformer.layers.0.0.to_qkv.weight"], qkv.shape.count == 2 { keys.append("encoder.heads * encoder.dim_head = \(qkv.shape[0] / 3)") }
        return "the file has \(facts.joined(separator: " and ")): set \(keys.joined(separator: ", "))."
    }

    /// How timm resamples a position grid: torch's interpolate with align_corners false, bicubic
    /// with antialias (PIL's cubic, a = -0.5, widened when shrinking), or bilinear without.
    enum PositionResampling: String {
        case bicubicAntialiased = "bicubically (antialiased)"
        case bilinear = "bilinearly"

        /// The (m, n) matrix of one axis.
        func axis(from n: Int, to m: Int) -> [Float] {
            switch self {
            case .bicubicAntialiased: return ResizeFilter.bicubic.matrix(input: n, output: m)
            case .bilinear:
                var w = [Float](repeating: 0, count: m * n)
                let scale = Double(n) / Double(m)
                for i in 0..<m {
                    let source = Swift.max(scale * (Double(i) + 0.5) - 0.5, 0)
                    let i0 = Swift.min(Int(source), n - 1), i1 = Swift.min(i0 + 1, n - 1)
                    let l1 = Float(source - Double(i0))
                    w[i * n + i0] += 1 - l1
                    w[i * n + i1] += l1
                }
                return w
            }
        }
    }

    /// A (1, 1 + n*n, D) table resampled to (1, 1 + m*m, D): the class row kept, the grid as
    /// timm's resample_abs_pos_embed does it.
    static func resample(_ table: Tensor, to shape: [Int], _ resampling: PositionResampling) -> Tensor? {
        let (from, to, width) = (table.shape[1], shape[1], shape[2])
        for extra in [1, 0] {
            let n = Int(Double(from - extra).squareRoot().rounded()), m = Int(Double(to - extra).squareRoot().rounded())
            guard n * n == from - extra, m * m == to - extra, n > 0, m > 0 else { continue }
            // The grid's matrix: the axis matrix applied to rows and to columns.
            let a = resampling.axis(from: n, to: m)
            var grid = [Float](repeating: 0, count: m * m * n * n)
            for yo in 0..<m { for xo in 0..<m { for yi in 0..<n { for xi in 0..<n {
                grid[(yo * m + xo) * n * n + yi * n + xi] = a[yo * n + yi] * a[xo * n + xi]
            } } } }
            let matrix = Tensor(shape: [m * m, n * n], grid)
            let values = table.scalars
            var out = [Float](repeating: 0, count: to * width)
            for r in 0..<extra { for c in 0..<width { out[r * width + c] = values[r * width + c] } }
            let weights = matrix.scalars
            for i in 0..<(m * m) {
                for j in 0..<(n * n) where weights[i * n * n + j] != 0 {
                    let w = weights[i * n * n + j]
                    for c in 0..<width { out[(extra + i) * width + c] += w * values[(extra + j) * width + c] }
                }
            }
            return Tensor(shape: shape, out)
        }
        return nil
    }
}
