import Data
import Encoders
import Foundation
import NN

/// A recipe: what to train, on what, and which stages to run in order. Read from YAML by
/// `RecipeLoader`; every key is documented in the README ("Recipes").
public struct Recipe: Codable {
    public var name: String
    public var seed: UInt64 = 0
    public var data = DataSection()
    public var encoder = EncoderSection()
    public var checkpoint = CheckpointSection()
    public var stages: [StageEntry]

    static let keys = ["name", "seed", "data", "encoder", "checkpoint", "stages"]

    public init(name: String, stages: [StageEntry]) {
        self.name = name
        self.stages = stages
    }

    public init(from decoder: Decoder) throws {
        let c = try decoder.section(Self.keys)
        name = try c.required("name")
        try c.check(!name.isEmpty && !name.contains("/") && name != "." && name != "..", "name",
                    "'\(name)' cannot name a run folder; use letters, digits, '-' and '_'")
        seed = try c.value("seed", seed)
        data = try c.value("data", data)
        encoder = try c.value("encoder", encoder)
        checkpoint = try c.value("checkpoint", checkpoint)
        stages = try c.required("stages")
        try c.check(!stages.isEmpty, "stages", "a recipe needs at least one stage (for example '- supervised: {}')")
        try encoder.check(against: data)
        for (index, stage) in stages.enumerated() {
            do { try stage.settings.validate(self) } catch let issue as RecipeIssue {
                throw RecipeIssue(path: ["stages", String(index), stage.kind] + issue.path, message: issue.message)
            }
        }
    }

    public func encode(to encoder: Encoder) throws {
        try encoder.fields(["name": name,
                            "seed": seed,
                            "data": data,
                            "encoder": self.encoder,
                            "checkpoint": checkpoint,
                            "stages": stages])
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

/// `data`: the data set and how images are normalised.
public struct DataSection: Codable {
    public var dataset = "fashion-mnist"
    public var path = FashionMNIST.defaultDirectory
    public var imageSize = 28
    public var channels = 1
    public var mean: [Double] = [0.2860]
    public var std: [Double] = [0.3530]
    public var trainSubset: Int?
    public var subsetMode = "first"
    public var testSubset: Int?

    public static let datasets = ["fashion-mnist"]
    static let keys = ["dataset", "path", "image_size", "channels", "mean", "std", "train_subset", "subset_mode", "test_subset"]

    public init() {}

    public init(from decoder: Decoder) throws {
        let c = try decoder.section(Self.keys)
        dataset = try c.choice("dataset", Self.datasets, dataset)
        path = try c.value("path", path)
        imageSize = try c.value("image_size", imageSize)
        try c.check(imageSize == 28, "image_size",
                    "fashion-mnist images are 28x28 and the data pipeline does not resize; use image_size: 28")
        channels = try c.value("channels", channels)
        try c.check(channels == 1 || channels == 3, "channels", "channels must be 1 or 3 (3 repeats the gray channel), got \(channels)")
        mean = try c.value("mean", mean)
        std = try c.value("std", std)
        try c.check(mean.count == 1 || mean.count == channels, "mean", "give one mean, or one per channel (\(channels))")
        try c.check(std.count == 1 || std.count == channels, "std", "give one std, or one per channel (\(channels))")
        try c.check(std.allSatisfy { $0 > 0 }, "std", "every std must be positive")
        trainSubset = try c.optional("train_subset")
        try c.check((trainSubset ?? 1) > 0, "train_subset", "a subset must hold at least one image")
        subsetMode = try c.choice("subset_mode", ["first", "sample"], subsetMode)
        testSubset = try c.optional("test_subset")
        try c.check((testSubset ?? 1) > 0, "test_subset", "a subset must hold at least one image")
    }

    public func encode(to encoder: Encoder) throws {
        try encoder.fields(["dataset": dataset,
                            "path": path,
                            "image_size": imageSize,
                            "channels": channels,
                            "mean": mean,
                            "std": std,
                            "train_subset": trainSubset,
                            "subset_mode": subsetMode,
                            "test_subset": testSubset])
    }

    public var classCount: Int { 10 }

    /// (channels, height, width) of one image.
    public var imageShape: [Int] { [channels, imageSize, imageSize] }
}

/// `encoder`: which encoder and its hyperparameters (vit-pytorch's names).
public struct EncoderSection: Codable {
    public var kind = "vit"
    public var patchSize = 4
    public var dim = 128
    public var depth = 4
    public var heads = 4
    public var dimHead = 32
    public var mlpDim = 256
    public var pool = "cls"
    public var dropout = 0.0
    public var embDropout = 0.0
    public var initialization = "pytorch"
    /// The stages of a `cvt` encoder (vit-pytorch's s1_/s2_/s3_ arguments); nil: CvTConfig's three
    /// stages for 28-pixel images.
    public var cvtStages: [CvTStageSection]?
    /// A `cvt` encoder's LayerNorm on the last stage's tokens (EsViT's CvT; vit-pytorch's has none).
    public var finalNorm = false

    public static let kinds = ["vit", "simple-vit", "cvt"]
    /// The encoders that are PatchTokenEncoders (what the masked objectives need).
    public static let patchEncoders = ["vit", "simple-vit"]
    static let keys = ["kind", "patch_size", "dim", "depth", "heads", "dim_head", "mlp_dim", "pool", "dropout", "emb_dropout", "init", "cvt_stages", "final_norm"]

    public init() {}

    public init(from decoder: Decoder) throws {
        let c = try decoder.section(Self.keys)
        kind = try c.choice("kind", Self.kinds, kind)
        patchSize = try c.value("patch_size", patchSize)
        for (key, value) in [("patch_size", patchSize)] { try c.check(value > 0, key, "must be positive") }
        dim = try c.value("dim", dim)
        depth = try c.value("depth", depth)
        heads = try c.value("heads", heads)
        dimHead = try c.value("dim_head", dimHead)
        mlpDim = try c.value("mlp_dim", mlpDim)
        for (key, value) in [("dim", dim), ("depth", depth), ("heads", heads), ("dim_head", dimHead), ("mlp_dim", mlpDim)] {
            try c.check(value > 0, key, "must be positive, got \(value)")
        }
        pool = try c.choice("pool", ["cls", "mean"], pool)
        dropout = try c.value("dropout", dropout)
        embDropout = try c.value("emb_dropout", embDropout)
        try c.check((0..<1).contains(dropout), "dropout", "must be in [0, 1)")
        try c.check((0..<1).contains(embDropout), "emb_dropout", "must be in [0, 1)")
        initialization = try c.choice("init", ["pytorch", "official"], initialization)
        cvtStages = try c.optional("cvt_stages")
        finalNorm = try c.value("final_norm", finalNorm)
        for (key, given) in [("cvt_stages", cvtStages != nil), ("final_norm", finalNorm)] where given && kind != "cvt" {
            throw RecipeIssue(path: c.codingPath.map(\.pathComponent) + [key], message: "\(key) applies to kind: cvt only (encoder.kind is \(kind))")
        }
        try c.check(cvtStages.map { !$0.isEmpty } ?? true, "cvt_stages", "give at least one stage")
    }

    public func encode(to encoder: Encoder) throws {
        try encoder.fields(["kind": kind,
                            "patch_size": patchSize,
                            "dim": dim,
                            "depth": depth,
                            "heads": heads,
                            "dim_head": dimHead,
                            "mlp_dim": mlpDim,
                            "pool": pool,
                            "dropout": dropout,
                            "emb_dropout": embDropout,
                            "init": initialization,
                            "cvt_stages": kind == "cvt" ? cvtConfig(data: DataSection()).stages.map(CvTStageSection.init) : nil,
                            "final_norm": finalNorm])
    }

    func check(against data: DataSection) throws {
        if kind == "cvt" {
            let config = cvtConfig(data: data)
            if config.mapSide(after: config.stages.count - 1, imageSize: data.imageSize) < 1 {
                throw RecipeIssue(path: ["encoder", "cvt_stages"], message: "the stages' strides shrink \(data.imageSize)-pixel images to nothing; use fewer stages or smaller strides")
            }
            return
        }
        if data.imageSize % patchSize != 0 {
            let divisors = (2...data.imageSize).filter { data.imageSize % $0 == 0 && $0 < data.imageSize }
            throw RecipeIssue(path: ["encoder", "patch_size"],
                              message: "patch size \(patchSize) does not divide the image size \(data.imageSize) (data.image_size); use one of \(divisors.map(String.init).joined(separator: ", "))")
        }
        if kind == "simple-vit" && pool != "mean" {
            throw RecipeIssue(path: ["encoder", "pool"], message: "simple-vit always mean-pools; set pool: mean")
        }
    }

    /// The ViT hyperparameters for images of `data`.
    public func vitConfig(data: DataSection) -> ViTConfig {
        var config = ViTConfig()
        (config.imageHeight, config.imageWidth) = (data.imageSize, data.imageSize)
        (config.patchHeight, config.patchWidth) = (patchSize, patchSize)
        config.channels = data.channels
        (config.dim, config.depth, config.heads, config.dimHead, config.mlpDim) = (dim, depth, heads, dimHead, mlpDim)
        config.numClasses = data.classCount
        config.pool = pool == "mean" ? .mean : .cls
        (config.dropout, config.embeddingDropout) = (Float(dropout), Float(embDropout))
        return config
    }

    /// The initialisation scheme `init` names.
    public var initScheme: InitScheme { initialization == "official" ? .official : .pytorch }

    /// The hidden layers this encoder exposes.
    public var hiddenLayerNames: [String] {
        kind == "cvt" ? ["tokens", "pooled", "logits"] + cvtConfig(data: DataSection()).stages.indices.map { "stages.\($0)" }
            : ["tokens", "pooled", "logits"] + (0..<depth).map { "blocks.\($0)" }
    }

    /// The CvT hyperparameters for images of `data` (dim_head and dropout from this section).
    public func cvtConfig(data: DataSection) -> CvTConfig {
        var config = CvTConfig()
        (config.imageSize, config.channels, config.numClasses) = (data.imageSize, data.channels, data.classCount)
        (config.dimHead, config.dropout, config.finalNorm) = (dimHead, Float(dropout), finalNorm)
        if let cvtStages { config.stages = cvtStages.map(\.stage) }
        return config
    }
}

/// `checkpoint`: how often training stages save a resumable checkpoint.
public struct CheckpointSection: Codable {
    public var everySteps = 200
    public var keepBest = true

    static let keys = ["every_steps", "keep_best"]

    public init() {}

    public init(from decoder: Decoder) throws {
        let c = try decoder.section(Self.keys)
        everySteps = try c.value("every_steps", everySteps)
        try c.check(everySteps > 0, "every_steps", "must be positive, got \(everySteps)")
        keepBest = try c.value("keep_best", keepBest)
    }

    public func encode(to encoder: Encoder) throws {
        try encoder.fields(["every_steps": everySteps,
                            "keep_best": keepBest])
    }
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
            if try c.decodeNil(forKey: key) { return try S(from: EmptyMappingDecoder(codingPath: decoder.codingPath + [key])) }
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

/// A decoder of an empty mapping, for a stage written without settings.
struct EmptyMappingDecoder: Decoder {
    var codingPath: [CodingKey]
    var userInfo: [CodingUserInfoKey: Any] { [:] }
    func container<Key: CodingKey>(keyedBy type: Key.Type) throws -> KeyedDecodingContainer<Key> {
        KeyedDecodingContainer(Empty<Key>(codingPath: codingPath))
    }
    func unkeyedContainer() throws -> UnkeyedDecodingContainer {
        throw DecodingError.typeMismatch([Any].self, .init(codingPath: codingPath, debugDescription: "expected a list"))
    }
    func singleValueContainer() throws -> SingleValueDecodingContainer {
        throw DecodingError.typeMismatch(Any.self, .init(codingPath: codingPath, debugDescription: "expected a value"))
    }

    struct Empty<Key: CodingKey>: KeyedDecodingContainerProtocol {
        var codingPath: [CodingKey]
        var allKeys: [Key] { [] }
        func contains(_ key: Key) -> Bool { false }
        func decodeNil(forKey key: Key) throws -> Bool { true }
        func decode<T: Decodable>(_ type: T.Type, forKey key: Key) throws -> T {
            throw DecodingError.keyNotFound(key, .init(codingPath: codingPath, debugDescription: "no value"))
        }
        func nestedContainer<N: CodingKey>(keyedBy type: N.Type, forKey key: Key) throws -> KeyedDecodingContainer<N> {
            throw DecodingError.keyNotFound(key, .init(codingPath: codingPath, debugDescription: "no value"))
        }
        func nestedUnkeyedContainer(forKey key: Key) throws -> UnkeyedDecodingContainer {
            throw DecodingError.keyNotFound(key, .init(codingPath: codingPath, debugDescription: "no value"))
        }
        func superDecoder() throws -> Decoder { EmptyMappingDecoder(codingPath: codingPath) }
        func superDecoder(forKey key: Key) throws -> Decoder { EmptyMappingDecoder(codingPath: codingPath + [key]) }
    }
}

/// One entry of `encoder.cvt_stages` (vit-pytorch's CvT arguments of one stage, without the prefix).
public struct CvTStageSection: Codable {
    public var stage: CvTStage

    init(_ stage: CvTStage) { self.stage = stage }

    static let keys = ["emb_dim", "emb_kernel", "emb_stride", "proj_kernel", "kv_proj_stride", "heads", "depth", "mlp_mult"]

    public init(from decoder: Decoder) throws {
        let c = try decoder.section(Self.keys)
        stage = CvTStage(embDim: try c.required("emb_dim"), embKernel: try c.value("emb_kernel", 3), embStride: try c.value("emb_stride", 2),
                         heads: try c.value("heads", 1), depth: try c.value("depth", 1))
        stage.projKernel = try c.value("proj_kernel", stage.projKernel)
        stage.kvProjStride = try c.value("kv_proj_stride", stage.kvProjStride)
        stage.mlpMult = try c.value("mlp_mult", stage.mlpMult)
        for (key, value) in [("emb_dim", stage.embDim), ("emb_kernel", stage.embKernel), ("emb_stride", stage.embStride), ("proj_kernel", stage.projKernel),
                             ("kv_proj_stride", stage.kvProjStride), ("heads", stage.heads), ("depth", stage.depth), ("mlp_mult", stage.mlpMult)] {
            try c.check(value > 0, key, "must be positive, got \(value)")
        }
    }

    public func encode(to encoder: Encoder) throws {
        try encoder.fields(["emb_dim": stage.embDim, "emb_kernel": stage.embKernel, "emb_stride": stage.embStride, "proj_kernel": stage.projKernel,
                            "kv_proj_stride": stage.kvProjStride, "heads": stage.heads, "depth": stage.depth, "mlp_mult": stage.mlpMult])
    }
}
