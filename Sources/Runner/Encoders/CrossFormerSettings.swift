import Encoders
import NN

/// `encoder: {kind: crossformer}`: vit-pytorch 1.7.14's CrossFormer (Wang et al. 2021):
/// cross-scale embeddings, short- and long-distance attention with a dynamic position bias.
/// 1.7.14 looks its biases up at the wrong offsets; `bias_index: vit-pytorch-1.7.14` keeps that.
public struct CrossFormerSettings: StagedEncoderSettings {
    public static let kind = "crossformer"
    public static let summary = "CrossFormer (Wang et al. 2021): cross-scale embedding, short/long-distance attention, dynamic position bias; for byol, dino, esvit and evaluation"
    public static let isPatchTokenEncoder = false
    public static let notPatchTokenReason = "its cross-scale embeddings convolve overlapping windows of several sizes, so no token can be hidden alone"

    public var config = CrossFormerConfig()

    public init() {}

    public static let fields: [Field<CrossFormerSettings>] = [
        Field("crossformer_stages", help: "the stages (vit-pytorch's per-stage arguments), each {dim (required), depth 1, global_window_size 1, local_window_size 7, kernel_sizes [2, 4], stride 2}; both windows must divide the stage's map",
              read: { s, c in
                  guard let stages = try c.decodeIfPresent([CrossFormerStageSection].self, forKey: RecipeKey("crossformer_stages")) else { return }
                  try c.check(!stages.isEmpty, "crossformer_stages", "give at least one stage")
                  s.config.stages = stages.map(\.stage)
              }, write: { $0.config.stages.map(CrossFormerStageSection.init) }),
        .value("dim_head", \.config.dimHead, "width per head (heads = the stage's dim / dim_head)", .positive),
        .converted("attn_dropout", \.config.attentionDropout, "dropout of the attention weights", Check<Double>.fraction, to: { Float($0) }, from: { Double($0) }),
        .converted("ff_dropout", \.config.ffDropout, "dropout in the feed-forward", Check<Double>.fraction, to: { Float($0) }, from: { Double($0) }),
        .choice("bias_index", \.config.biasIndex,
                "paper (each offset reads its own bias) | vit-pytorch-1.7.14 (the biases of offsets -w...w indexed as a (2w-1)^2 table: offset (0, 0) reads another offset's bias)"),
    ]

    public static func build(_ config: CrossFormerConfig, initializer: Initializer) -> any HiddenLayerEncoder {
        CrossFormer(config, initializer: initializer)
    }
}

/// One entry of `encoder.crossformer_stages`.
public struct CrossFormerStageSection: RecipeSection {
    public var stage = CrossFormerStage(dim: 0, depth: 1, globalWindowSize: 1, localWindowSize: 7, kernelSizes: [2, 4], stride: 2)

    public init() {}
    init(_ stage: CrossFormerStage) { self.stage = stage }

    public static let fields: [Field<CrossFormerStageSection>] = [
        Field("dim", help: "channels of the stage (required)", read: { s, c in
            s.stage.dim = try c.required("dim")
            try c.check(Check<Int>.positive.problem(s.stage.dim), "dim")
        }, write: { $0.stage.dim }),
        .value("depth", \.stage.depth, "blocks (short and long attention each)", .positive),
        .value("global_window_size", \.stage.globalWindowSize, "long-distance attention's grid side", .positive),
        .value("local_window_size", \.stage.localWindowSize, "short-distance attention's window side", .positive),
        Field("kernel_sizes", help: "the cross-scale embedding's kernels", read: { s, c in
            guard let k = try c.decodeIfPresent([Int].self, forKey: RecipeKey("kernel_sizes")) else { return }
            try c.check(!k.isEmpty && k.allSatisfy { $0 > 0 }, "kernel_sizes", "give one or more positive kernel sizes, e.g. [2, 4]")
            s.stage.kernelSizes = k
        }, write: { $0.stage.kernelSizes }),
        .value("stride", \.stage.stride, "the embedding's stride", .positive),
    ]
}

extension CrossFormerConfig: StagedEncoderConfig {}
