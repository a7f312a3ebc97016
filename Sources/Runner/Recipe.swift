import Data
import Encoders
import Foundation
import NN

/// A recipe: what to train, on what, and which stages to run in order. Read from YAML by
/// `RecipeLoader`; every key is documented in the README ("Recipes").
public struct Recipe: RecipeSection {
    public var name: String
    public var seed: UInt64 = 0
    public var data = DataSection()
    public var encoder = EncoderSection()
    public var checkpoint = CheckpointSection()
    public var stages: [StageEntry]
    /// The recipe's `sweep:` section (seeds and a grid), read by `RecipeLoader` and expanded by
    /// `workbench sweep`; not a key of the runs it makes (each run's recipe.yaml has none).
    public var sweep: SweepSpec?

    public init() { self.init(name: "", stages: []) }

    public init(name: String, stages: [StageEntry]) {
        self.name = name
        self.stages = stages
    }

    public static let fields: [Field<Recipe>] = [
        Field("name", help: "required; the run folder is runs/NAME/TIMESTAMP", read: { r, c in
            r.name = try c.required("name")
            try c.check(!r.name.isEmpty && !r.name.contains("/") && r.name != "." && r.name != "..", "name",
                        "'\(r.name)' cannot name a run folder; use letters, digits, '-' and '_'")
        }, write: { $0.name }),
        .value("seed", \.seed, "initialisation, data order, flips, dropout, augmentations: the same seed gives the same bits"),
        Field("data", help: "the data set and its preprocessing", read: { r, c in r.data = try c.value("data", r.data) }, write: { $0.data }),
        Field("encoder", help: "the encoder kind and its hyperparameters", read: { r, c in r.encoder = try c.value("encoder", r.encoder) },
              write: { $0.encoder }),
        .section("checkpoint", \.checkpoint, "how often training stages save a resumable checkpoint"),
        Field("stages", help: "required; run in order, each on the encoder the stages before it left", read: { r, c in
            r.stages = try c.required("stages")
            try c.check(!r.stages.isEmpty, "stages", "a recipe needs at least one stage (for example '- supervised: {}')")
        }, write: { $0.stages }),
    ]

    public init(from decoder: Decoder) throws {
        self.init()
        try decode(from: decoder)
        if let (key, problem) = encoder.settings.check(encoderInput) {
            throw RecipeIssue(path: ["encoder", key], message: problem)
        }
        for (index, stage) in stages.enumerated() {
            do { try stage.settings.validate(self) } catch let issue as RecipeIssue {
                throw RecipeIssue(path: ["stages", String(index), stage.kind] + issue.path, message: issue.message)
            }
        }
    }

    /// What the encoder is built for, as far as the recipe says (the class count comes from the
    /// data set when it knows it without reading its files; a run uses the loaded data's).
    public var encoderInput: EncoderInput {
        EncoderInput(imageSize: data.imageSize, channels: data.channels, classes: data.source.classNames(path: data.path)?.count ?? 10)
    }

    /// Stage names used in metrics.h5 and TensorBoard: the kind, numbered when it repeats
    /// ("supervised", "extract", "extract_2").
    public var stageNames: [String] {
        var seen: [String: Int] = [:]
        return stages.map { stage in
            seen[stage.kind, default: 0] += 1
            let n = seen[stage.kind]!
            return n == 1 ? stage.kind : "\(stage.kind)_\(n)"
        }
    }
}

/// `checkpoint`: how often training stages save a resumable checkpoint.
public struct CheckpointSection: RecipeSection {
    public var everySteps = 200
    public var keepBest = true

    public init() {}

    public static let fields: [Field<CheckpointSection>] = [
        .value("every_steps", \.everySteps, "a resumable checkpoint every N training steps", .positive),
        .value("keep_best", \.keepBest, "also keep the weights of the best epoch (checkpoints/best.safetensors)"),
    ]
}

/// One entry of `stages`: a mapping with a single key, the stage kind, holding its settings
/// (`- supervised: {epochs: 5}`).
public struct StageEntry: Codable {
    public let kind: String
    public let settings: any Stage

    public init(_ settings: any Stage) {
        kind = type(of: settings).kind
        self.settings = settings
    }

    public init(from decoder: Decoder) throws {
        let kinds = StageRegistry.kinds.map { $0.kind }
        let c = try decoder.container(keyedBy: RecipeKey.self)
        let path = decoder.codingPath.map(\.pathComponent)
        guard c.allKeys.count == 1, let key = c.allKeys.first else {
            throw RecipeIssue(path: path, message: "each stage is a mapping with one key, the stage kind (one of \(kinds.joined(separator: ", "))), found \(c.allKeys.count) keys")
        }
        guard let type = StageRegistry.kinds.first(where: { $0.kind == key.stringValue }) else {
            var message = "unknown stage '\(key.stringValue)'"
            if let near = nearest(key.stringValue, in: kinds) { message += "; did you mean '\(near)'?" }
            message += " Stages: \(kinds.joined(separator: ", "))."
            throw RecipeIssue(path: path + [key.stringValue], message: message)
        }
        func decodeSettings<S: Stage>(_ type: S.Type) throws -> any Stage {
            // `- extract:` with nothing after it means every default.
            if try c.decodeNil(forKey: key) { return S() }
            return try c.decode(S.self, forKey: key)
        }
        kind = key.stringValue
        settings = try decodeSettings(type)
    }

    public func encode(to encoder: Encoder) throws {
        var c = encoder.container(keyedBy: RecipeKey.self)
        try c.encode(settings, forKey: RecipeKey(kind))
    }
}

