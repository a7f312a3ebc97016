import Encoders
import NN

/// `encoder: {kind: cvt}`: vit-pytorch 1.7.14's CvT (Wu et al. 2021): convolutional token
/// embeddings and projections in stages; no patches, so only the view objectives (byol, dino,
/// esvit) and the evaluation stages take it. The defaults are CvTConfig's.
public struct CvTSettings: EncoderSettings {
    public static let kind = "cvt"
    public static let summary = "CvT (vit-pytorch 1.7.14): convolutional stages, no patches; for byol, dino, esvit and evaluation"
    public static let isPatchTokenEncoder = false
    public static let isHierarchical = true
    public static let notPatchTokenReason = "its convolutional stages make tokens from overlapping windows, with no flat sequence of patches to mask"

    public var config = CvTConfig()

    public init() {}

    public static let fields: [Field<CvTSettings>] = [
        .value("dim_head", \.config.dimHead, "width per attention head, every stage", .positive),
        .converted("dropout", \.config.dropout, "dropout in attention and feed-forward", Check<Double>.fraction, to: { Float($0) }, from: { Double($0) }),
        Field("cvt_stages", help: "the stages (vit-pytorch's s1_/s2_/s3_ arguments), each {emb_dim (required), emb_kernel 3, emb_stride 2, proj_kernel 3, kv_proj_stride 2, heads 1, depth 1, mlp_mult 4}; tokens is the last stage's map as (B, H*W, C), pooled its mean, stages.i (B, C, H, W)",
              read: { s, c in
                  guard let stages = try c.decodeIfPresent([CvTStageSection].self, forKey: RecipeKey("cvt_stages")) else { return }
                  try c.check(!stages.isEmpty, "cvt_stages", "give at least one stage")
                  s.config.stages = stages.map(\.stage)
              }, write: { $0.config.stages.map(CvTStageSection.init) }),
        .value("final_norm", \.config.finalNorm, "EsViT's LayerNorm on the last stage's tokens before tokens, pooled and logits (vit-pytorch's CvT has none)"),
    ]

    public var hiddenLayerNames: [String] { config.hiddenLayerNames }

    public func check(_ input: EncoderInput) -> (key: String, problem: String)? {
        config.mapSide(after: config.stages.count - 1, imageSize: input.imageSize) >= 1 ? nil
            : ("cvt_stages", "the stages' strides shrink \(input.imageSize)-pixel images to nothing; use fewer stages or smaller strides")
    }

    public func make(_ input: EncoderInput, initializer: Initializer) -> any HiddenLayerEncoder {
        var c = config
        (c.imageSize, c.channels, c.numClasses) = (input.imageSize, input.channels, input.classes)
        return CvT(c, initializer: initializer)
    }
}

/// One entry of `encoder.cvt_stages` (vit-pytorch's CvT arguments of one stage, without the prefix).
public struct CvTStageSection: RecipeSection {
    public var stage = CvTStage(embDim: 0, embKernel: 3, embStride: 2, heads: 1, depth: 1)

    public init() {}
    init(_ stage: CvTStage) { self.stage = stage }

    public static let fields: [Field<CvTStageSection>] = [
        Field("emb_dim", help: "channels of the stage (required)", read: { s, c in
            s.stage.embDim = try c.required("emb_dim")
            try c.check(Check<Int>.positive.problem(s.stage.embDim), "emb_dim")
        }, write: { $0.stage.embDim }),
        .value("emb_kernel", \.stage.embKernel, "kernel of the token embedding convolution", .positive),
        .value("emb_stride", \.stage.embStride, "its stride", .positive),
        .value("proj_kernel", \.stage.projKernel, "kernel of the depthwise q/k/v projections", .positive),
        .value("kv_proj_stride", \.stage.kvProjStride, "stride of the key/value projections", .positive),
        .value("heads", \.stage.heads, "attention heads", .positive),
        .value("depth", \.stage.depth, "transformer blocks", .positive),
        .value("mlp_mult", \.stage.mlpMult, "feed-forward width as a multiple of emb_dim", .positive),
    ]
}
