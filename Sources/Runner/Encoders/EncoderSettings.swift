import Encoders
import NN
import TensorCore

/// The settings of one encoder kind (`encoder: {kind: vit, ...}`): a recipe section declared by
/// its fields, able to build the encoder. One file per encoder in this folder, and one line in
/// `EncoderRegistry`.
public protocol EncoderSettings: RecipeSection {
    static var kind: String { get }
    static var summary: String { get }
    /// Whether the encoder is a PatchTokenEncoder (what the masked objectives need).
    static var isPatchTokenEncoder: Bool { get }
    /// Why the masked objectives do not apply to this encoder (for their refusal), when it is not one.
    static var notPatchTokenReason: String { get }
    /// The masked objectives a patch-token encoder still cannot serve (objective kind: why), for
    /// encoders whose tokens need the full grid (RvT's convolutional queries) or have no positions to drop.
    static var refusedObjectives: [String: String] { get }
    /// Whether the encoder works in stages that downsample (CvT and the zoo's second part):
    /// bench-step times such kinds at their own defaults rather than the ViT bench's sizes.
    static var isHierarchical: Bool { get }
    /// The side in pixels of the square each token covers, for patch encoders; nil otherwise.
    var patchSize: Int? { get }
    /// The number of ViT blocks that layer-wise learning-rate decay spreads over (parameters
    /// named transformer.layers.i), or nil when the encoder has no such blocks.
    var layerDecayDepth: Int? { get }
    /// Whether the encoder adds learned position embeddings to its tokens (MP3 trains without
    /// them, so they stay at their random start).
    var learnedPositions: Bool { get }
    /// The names `hidden_layer` may take, from the encoder's own configuration.
    var hiddenLayerNames: [String] { get }
    /// A problem with images of this shape, with the key to blame, or nil.
    func check(_ input: EncoderInput) -> (key: String, problem: String)?
    func make(_ input: EncoderInput, initializer: Initializer) -> any HiddenLayerEncoder
    /// The PyTorch constructor call of the same model (vit-pytorch's, or timm's for timm-vit), for
    /// `export`'s hint, and the library whose names the encoder's are ("vit-pytorch", "timm").
    func pytorchModel(_ input: EncoderInput) -> String?
    static var namesOf: String { get }
}

extension EncoderSettings {
    public var patchSize: Int? { nil }
    public static var isHierarchical: Bool { false }
    public static var notPatchTokenReason: String { "it has no flat sequence of patch tokens" }
    public static var refusedObjectives: [String: String] { [:] }
    public var layerDecayDepth: Int? { nil }
    public var learnedPositions: Bool { false }
    public func pytorchModel(_ input: EncoderInput) -> String? { nil }
    public static var namesOf: String { "vit-pytorch" }
    public func check(_ input: EncoderInput) -> (key: String, problem: String)? { nil }
}

/// The configuration of a staged encoder whose recipe keys all live in it: the input it is built
/// for, its hidden layers, and what is wrong for images of a given side (also DINO's local crops).
public protocol StagedEncoderConfig {
    var imageSize: Int { get set }
    var channels: Int { get set }
    var numClasses: Int { get set }
    var hiddenLayerNames: [String] { get }
    func problem(imageSide: Int) -> (key: String, problem: String)?
}

/// The settings of such an encoder: the config, and how the encoder is built from it. Hidden layers,
/// the check of an image size and `make` follow (the zoo's second part: NesT, MaxViT, LeViT, ...).
public protocol StagedEncoderSettings: EncoderSettings {
    associatedtype Config: StagedEncoderConfig
    var config: Config { get }
    static func build(_ config: Config, initializer: Initializer) -> any HiddenLayerEncoder
}

extension StagedEncoderSettings {
    public static var isHierarchical: Bool { true }
    public var hiddenLayerNames: [String] { config.hiddenLayerNames }

    /// The config for images and classes of `input`.
    func config(for input: EncoderInput) -> Config {
        var c = config
        (c.imageSize, c.channels, c.numClasses) = (input.imageSize, input.channels, input.classes)
        return c
    }

    public func check(_ input: EncoderInput) -> (key: String, problem: String)? {
        config(for: input).problem(imageSide: input.imageSize)
    }

    public func make(_ input: EncoderInput, initializer: Initializer) -> any HiddenLayerEncoder {
        Self.build(config(for: input), initializer: initializer)
    }
}

/// What an encoder is built for: the images and the classes of the data set.
public struct EncoderInput: Equatable {
    public var imageSize: Int
    public var channels: Int
    public var classes: Int
    public init(imageSize: Int, channels: Int, classes: Int) { (self.imageSize, self.channels, self.classes) = (imageSize, channels, classes) }
}

/// `encoder`: the kind, its own keys, and the keys every encoder shares (`init`, `weights`).
public struct EncoderSection: Codable {
    public var settings: any EncoderSettings
    public var initialization = "pytorch"
    /// A weights file to start from (see `EncoderWeights`), the prefix of the encoder's names in
    /// it (nil: found from the file), and whether the classification head stays freshly made.
    public var weights: String?
    public var weightsPrefix: String?
    public var weightsSkipHead = false

    public init(_ settings: any EncoderSettings = ViTSettings()) { self.settings = settings }

    public var kind: String { type(of: settings).kind }
    public var hiddenLayerNames: [String] { settings.hiddenLayerNames }
    /// The initialisation scheme `init` names.
    public var initScheme: InitScheme { initialization == "official" ? .official : .pytorch }

    static let sharedKeys = ["kind", "init", "weights", "weights_prefix", "weights_skip_head"]

    public init(from decoder: Decoder) throws {
        let c = try decoder.container(keyedBy: RecipeKey.self)
        let kinds = EncoderRegistry.kinds.map { $0.kind }
        let kind = try c.choice("kind", kinds, ViTSettings.kind)
        let type = EncoderRegistry.kinds.first { $0.kind == kind }!
        // A key of another kind: say whose it is rather than only "unknown".
        for key in c.allKeys where !Self.sharedKeys.contains(key.stringValue) && !type.keys.contains(key.stringValue) && !decoder.isStoredRecipe {
            let owners = EncoderRegistry.kinds.filter { $0.keys.contains(key.stringValue) }.map { $0.kind }
            if !owners.isEmpty {
                // A near key of this kind is the likelier meaning (`dims` for a ViT's `dim`).
                let near = nearest(key.stringValue, in: Self.sharedKeys + type.keys).map { " Did you mean '\($0)'?" } ?? ""
                throw RecipeIssue(path: c.codingPath.map(\.pathComponent) + [key.stringValue],
                                  message: "\(key.stringValue) applies to kind: \(owners.joined(separator: ", ")) only (encoder.kind is \(kind)); remove it.\(near) Keys of \(kind): \((Self.sharedKeys + type.keys).joined(separator: ", ")).")
            }
        }
        settings = try type.decoded(from: decoder, extraKeys: Self.sharedKeys)
        initialization = try c.choice("init", ["pytorch", "official"], initialization)
        weights = try c.optional("weights")
        try c.check(weights.map { !$0.isEmpty } ?? true, "weights", "give the path of a weights file, or null for none")
        weightsPrefix = try c.optional("weights_prefix")
        weightsSkipHead = try c.value("weights_skip_head", weightsSkipHead)
        if weights == nil && !decoder.isStoredRecipe {
            for key in ["weights_prefix", "weights_skip_head"] where c.contains(RecipeKey(key)) {
                throw RecipeIssue(path: c.codingPath.map(\.pathComponent) + [key], message: "\(key) applies only with encoder.weights (a file to load)")
            }
        }
    }

    public func encode(to encoder: Encoder) throws {
        var pairs: [(String, any Encodable)] = [("kind", kind)] + settings.encodedFields + [("init", initialization), ("weights", weights)]
        if weights != nil { pairs += [("weights_prefix", weightsPrefix), ("weights_skip_head", weightsSkipHead)] }
        try encoder.fields(pairs)
    }

    /// The help of the shared keys, for the reference.

    /// Every hidden layer's shape for one image of `input` (batch axis left out), in
    /// `hiddenLayerNames` order: what `workbench validate` and `workbench list` show.
    public func hiddenShapes(_ input: EncoderInput) -> [(name: String, shape: [Int])] {
        let (encoder, _) = make(input, seed: 0)
        encoder.eval()
        let names = encoder.hiddenLayerNames
        let outputs = Autograd.noGrad { encoder.hiddenOutputs(.zeros([2, input.channels, input.imageSize, input.imageSize]), layers: Set(names)) }
        return names.compactMap { name in outputs[name].map { (name, Array($0.shape.dropFirst())) } }
    }

    /// "stages.0 64x13x13, ..., tokens 16x256, pooled 256" for messages.
    public func hiddenShapesLine(_ input: EncoderInput) -> String {
        hiddenShapes(input).map { "\($0.name) \($0.shape.map(String.init).joined(separator: "x"))" }.joined(separator: ", ")
    }

    /// Builds the encoder for `input`, with its initializer (seeded by `seed`).
    public func make(_ input: EncoderInput, seed: UInt64) -> (any HiddenLayerEncoder, Initializer) {
        let initializer = Initializer(scheme: initScheme, seed: seed)
        return (settings.make(input, initializer: initializer), initializer)
    }
}
