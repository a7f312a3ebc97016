import Data
import Encoders
import NN
import Objectives

/// The settings of one objective (`objective: {kind: mae, ...}` in a pretrain stage): a recipe
/// section declared by its fields, able to build the objective around the run's encoder. One
/// file per objective in this folder, and one line in `ObjectiveRegistry`.
public protocol ObjectiveSettings: RecipeSection {
    static var kind: String { get }
    static var summary: String { get }
    /// The training defaults of this objective's reference recipe.
    static var trainingDefaults: TrainingSettings { get }
    /// torch_step_bench.py's configurations of this objective, by `bench-step --objective` name.
    static var benchmarks: [ObjectiveBenchmark<Self>] { get }
    /// Problems only this objective can see (e.g. an encoder that is not patch-based).
    func validate(_ recipe: Recipe) throws
    /// The objective around `encoder`, or nil when it cannot wrap this encoder. `newEncoder`
    /// builds another encoder of the same architecture (for EMA teachers).
    func make(encoder: any HiddenLayerEncoder, newEncoder: () -> any HiddenLayerEncoder, recipe: Recipe, initializer: Initializer,
              seed: UInt64) -> (any Objective)?
    /// The augmented views the objective trains on, or nil for the plain (flipped) images.
    func views(_ recipe: Recipe) -> ViewPipeline?
}

/// One of torch_step_bench.py's objective configurations: the settings, and the images' channels
/// and normalisation it runs on.
public struct ObjectiveBenchmark<Settings: ObjectiveSettings> {
    public let name: String
    public let settings: Settings
    public var channels = 1
    public var mean = [0.2860], std = [0.3530]
    public init(_ name: String, _ settings: Settings, channels: Int = 1, mean: [Double] = [0.2860], std: [Double] = [0.3530]) {
        (self.name, self.settings, self.channels, self.mean, self.std) = (name, settings, channels, mean, std)
    }
}

extension ObjectiveSettings {
    public func views(_ recipe: Recipe) -> ViewPipeline? { nil }
    public static var benchmarks: [ObjectiveBenchmark<Self>] { [] }

    var kindName: String { Self.kind }
    var defaults: TrainingSettings { Self.trainingDefaults }

    /// `kind` first, then the fields.
    public func encode(to encoder: Encoder) throws { try encoder.fields([("kind", Self.kind)] + encodedFields) }

    /// The benchmark configurations, type-erased for bench-step.
    public static var anyBenchmarks: [(name: String, settings: any ObjectiveSettings, channels: Int, mean: [Double], std: [Double])] {
        benchmarks.map { ($0.name, $0.settings, $0.channels, $0.mean, $0.std) }
    }
}

/// Masked objectives need a PatchTokenEncoder; says so, naming the encoder, when it is not.
func requirePatchEncoder(_ objective: String, _ recipe: Recipe) throws {
    let type = Swift.type(of: recipe.encoder.settings)
    guard type.isPatchTokenEncoder else {
        let patchKinds = EncoderRegistry.kinds.filter { $0.isPatchTokenEncoder }.map { $0.kind }
        throw RecipeIssue(path: ["kind"], message: "\(objective) masks patches, so it needs a patch-token encoder (\(patchKinds.joined(separator: ", "))); the \(recipe.encoder.kind) encoder is not one: \(type.notPatchTokenReason). Use encoder.kind: vit, or an objective that reads views (byol, dino, esvit).")
    }
    if let reason = type.refusedObjectives[objective] {
        let others = ["mae", "simmim", "mpp", "mp3"].filter { type.refusedObjectives[$0] == nil }
        throw RecipeIssue(path: ["kind"], message: "\(objective) does not apply to the \(recipe.encoder.kind) encoder: \(reason). With \(recipe.encoder.kind), use \((others + ["byol", "dino", "esvit"]).joined(separator: ", ")).")
    }
}

/// The number of patches of the recipe's images (patch encoders).
func patchCount(_ recipe: Recipe) -> Int {
    let patch = recipe.encoder.settings.patchSize ?? 1
    return (recipe.data.imageSize / patch) * (recipe.data.imageSize / patch)
}
