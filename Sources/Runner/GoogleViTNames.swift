import Foundation
import TensorCore

/// Google's ViT checkpoints (the .npz files of google-research/vision_transformer, which
/// jeonsworld's ViT-pytorch and timm load) in timm's names and layouts, as timm's
/// `_load_weights` maps them: HWIO convolution kernels to OIHW, (in, out) dense kernels
/// transposed, per-head query/key/value kernels flattened and stacked into qkv.
enum GoogleViTNames {
    /// The tensors under timm's names, or nil when `file` is not a Google ViT checkpoint.
    static func toTimm(_ file: [String: Tensor]) -> [String: Tensor]? {
        let root = file["opt/target/embedding/kernel"] != nil ? "opt/target/" : ""
        guard let embedding = file[root + "embedding/kernel"], embedding.shape.count == 4 else { return nil }
        var out: [String: Tensor] = [:]
        func t(_ name: String) -> Tensor? { file[root + name] }
        out["patch_embed.proj.weight"] = embedding.permuted([3, 2, 0, 1])
        out["patch_embed.proj.bias"] = t("embedding/bias")
        out["cls_token"] = t("cls")
        out["pos_embed"] = t("Transformer/posembed_input/pos_embedding")
        out["norm.weight"] = t("Transformer/encoder_norm/scale")
        out["norm.bias"] = t("Transformer/encoder_norm/bias")
        if let head = t("head/kernel"), head.shape.count == 2 { out["head.weight"] = head.transposed(0, 1) }
        out["head.bias"] = t("head/bias")
        var i = 0
        while let norm1 = t("Transformer/encoderblock_\(i)/LayerNorm_0/scale") {
            let block = "Transformer/encoderblock_\(i)/", mha = block + "MultiHeadDotProductAttention_1/", to = "blocks.\(i)."
            out[to + "norm1.weight"] = norm1
            out[to + "norm1.bias"] = t(block + "LayerNorm_0/bias")
            let kernels = ["query", "key", "value"].compactMap { t(mha + "\($0)/kernel") }
            if kernels.count == 3, kernels.allSatisfy({ $0.shape.count == 3 }) {
                // (D, heads, head_dim) -> (D, D) -> transposed, stacked: (3D, D).
                out[to + "attn.qkv.weight"] = Tensor.concat(kernels.map { $0.reshaped([$0.shape[0], $0.shape[1] * $0.shape[2]]).transposed(0, 1) }, axis: 0)
            }
            let biases = ["query", "key", "value"].compactMap { t(mha + "\($0)/bias") }
            if biases.count == 3 { out[to + "attn.qkv.bias"] = Tensor.concat(biases.map { $0.reshaped([$0.count]) }, axis: 0) }
            if let proj = t(mha + "out/kernel"), proj.shape.count == 3 {
                // (heads, head_dim, D) -> (D, heads, head_dim) -> (D, D).
                out[to + "attn.proj.weight"] = proj.permuted([2, 0, 1]).reshaped([proj.shape[2], proj.shape[0] * proj.shape[1]])
            }
            out[to + "attn.proj.bias"] = t(mha + "out/bias")
            out[to + "norm2.weight"] = t(block + "LayerNorm_2/scale")
            out[to + "norm2.bias"] = t(block + "LayerNorm_2/bias")
            for (dense, fc) in [("Dense_0", "fc1"), ("Dense_1", "fc2")] {
                if let kernel = t(block + "MlpBlock_3/\(dense)/kernel"), kernel.shape.count == 2 { out[to + "mlp.\(fc).weight"] = kernel.transposed(0, 1) }
                out[to + "mlp.\(fc).bias"] = t(block + "MlpBlock_3/\(dense)/bias")
            }
            i += 1
        }
        return out.compactMapValues { $0 }.mapValues { Tensor(shape: $0.shape, $0.scalars) }
    }
}
