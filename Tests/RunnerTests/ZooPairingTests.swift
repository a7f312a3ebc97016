import Foundation
import NN
import Runner
import Store
import TestSupport
import XCTest

/// Every (patch encoder, objective) pairing marked as working in the README trains through the
/// runner's own stages: a few steps on a fixed set of 32 Fashion-MNIST images (so that the loss
/// has something to fall on), finite throughout and lower at the end than at the start (for DINO
/// and EsViT: the KL divergence to the teacher, the loss less the teacher's entropy).
final class ZooPairingTests: XCTestCase {
    static let objectives: [String: String] = [
        "mae": "{kind: mae, decoder_dim: 16, decoder_depth: 1, decoder_heads: 2, decoder_dim_head: 8}",
        "simmim": "{kind: simmim}",
        "mpp": "{kind: mpp}",
        "mp3": "{kind: mp3}",
        "byol": "{kind: byol, projection_size: 16, projection_hidden_size: 32, augment: {global_size: 28}}",
        "dino": "{kind: dino, out_dim: 64, hidden_dim: 32, bottleneck_dim: 16, warmup_teacher_temp_epochs: 0}",
        "esvit": "{kind: esvit, out_dim: 64, hidden_dim: 32, bottleneck_dim: 16, warmup_teacher_temp_epochs: 0}",
    ]

    func losses(encoder: String, objective: String, extra: String = "") throws -> [Double] {
        let root = NSTemporaryDirectory() + "zoo-\(encoder)-\(objective)-\(getpid())"
        defer { try? FileManager.default.removeItem(atPath: root) }
        let text = """
            name: zoo
            data: {train_subset: 32, test_subset: 32}
            encoder: \(encoder == "cvt" ? "{kind: cvt, dim_head: 16, cvt_stages: [{emb_dim: 16, emb_kernel: 7, emb_stride: 4}, {emb_dim: 32, heads: 2}]}"
                : encoder == "cct" ? "{kind: cct, dim: 32, depth: 2, heads: 2, conv_layers: 2\(extra)}"
                : encoder == "cross-vit" ? "{kind: cross-vit, sm_dim: 16, lg_dim: 32, sm_patch_size: 2, lg_patch_size: 4, sm_enc_heads: 2, lg_enc_heads: 2, sm_enc_dim_head: 8, lg_enc_dim_head: 16, cross_attn_heads: 2, cross_attn_dim_head: 8, sm_enc_mlp_dim: 32, lg_enc_mlp_dim: 64, lg_enc_depth: 1, depth: 1\(extra)}"
                : encoder == "nest" ? "{kind: nest, patch_size: 2, dim: 16, heads: 2, num_hierarchies: 2, block_repeats: 1, mlp_mult: 2\(extra)}"
                : encoder == "maxvit" ? "{kind: maxvit, dim: 16, depth: [1], dim_head: 8, window_size: 7, dropout: 0.0\(extra)}"
                : encoder == "levit" ? "{kind: levit, stages: 2, dim: [16, 32], depth: 1, heads: 2, dim_key: 8, dim_value: 8\(extra)}"
                : encoder == "mobilevit" ? "{kind: mobilevit, channels: [8, 8, 16, 16, 16, 16, 24, 24, 32, 32, 64], dims: [16, 16, 24], depths: [1, 1, 1]\(extra)}"
                : encoder == "sepvit" ? "{kind: sepvit, dim: 16, depth: [1], heads: 2, dim_head: 8, window_size: 7\(extra)}"
                : encoder == "twins-svt" ? "{kind: twins-svt, heads: 2, dim_head: 8, twins_stages: [{emb_dim: 16, patch_size: 4, local_patch_size: 7, global_k: 7}, {emb_dim: 32, patch_size: 7, local_patch_size: 1, global_k: 1}]\(extra)}"
                : encoder == "scalable-vit" ? "{kind: scalable-vit, dim: 16, depth: [1, 1], heads: 2, reduction_factor: [2, 1], window_size: 0, ssa_dim_key: 8, ssa_dim_value: 8, iwsa_dim_key: 8, iwsa_dim_value: 8\(extra)}"
                : encoder == "crossformer" ? "{kind: crossformer, crossformer_stages: [{dim: 32, local_window_size: 7, global_window_size: 1, kernel_sizes: [4, 8], stride: 4}, {dim: 32, local_window_size: 1, kernel_sizes: [2, 4]}]\(extra)}"
                : encoder == "regionvit" ? "{kind: regionvit, dim: [16, 32], depth: [1, 1], heads: 2, dim_head: 8\(extra)}"
                : encoder == "pit" ? "{kind: pit, patch_size: 4, dim: 16, depth: [1, 1], heads: [1, 2], dim_head: 8, mlp_dim: 32\(extra)}"
                : encoder == "t2t-vit" ? "{kind: t2t-vit, dim: 32, depth: 2, heads: 2, mlp_dim: 64, dim_head: 16, t2t_layers: [[3, 2], [3, 2]]\(extra)}"
                : "{kind: \(encoder), patch_size: 4, dim: 32, depth: 2, heads: 2, mlp_dim: 64\(encoder == "timm-vit" ? "" : ", dim_head: 16")\(extra)}")
            stages:
              - pretrain:
                  objective: \(objective == "mp3" && encoder != "simple-vit" ? "{kind: mp3, allow_learned_positions: true}"
                      // MaxViT's and SepViT's 7x7 windows need 28-pixel views: DINO and EsViT without local crops.
                      : ["maxvit", "sepvit", "twins-svt", "crossformer", "regionvit"].contains(encoder) && ["dino", "esvit"].contains(objective) ? String(Self.objectives[objective]!.dropLast()) + ", augment: {local_crops: 0}}"
                      : Self.objectives[objective]!)
                  epochs: 12
                  batch_size: 32
                  lr: 1.0e-3
                  warmup_epochs: 0
            """
        let recipe = try RecipeLoader.parse(text, file: "\(encoder)-\(objective).yaml")
        let directory = try RecipeRunner.start(recipe, recipeFile: "r.yaml", runsDirectory: root, log: RunLog(echo: false))
        // The encoder the later stages see (DINO's and EsViT's teacher, BYOL's online network) has moved from its start.
        let (start, _) = recipe.encoder.make(recipe.encoderInput, seed: recipe.seed)
        let trained = try WeightFiles.read(path: directory + "/checkpoints/encoder.safetensors")
        let moved = start.stateDict().filter { name, value in trained[name].map { $0.scalars != value.scalars } ?? false }.count
        XCTAssertGreaterThan(moved, start.stateDict().count / 2, "\(encoder) + \(objective): most of the encoder's tensors moved")
        let metrics = try HDF5File(path: directory + "/metrics.h5", mode: .readOnly)
        let loss = try metrics.root.dataset("pretrain/steps/loss").read(as: Double.self)
        // DINO's and EsViT's cross-entropy also holds the teacher's entropy, which centering raises
        // at first; the student lowers the rest, the KL divergence.
        guard let entropy = try? metrics.root.dataset("pretrain/steps/teacher_entropy").read(as: Double.self) else { return loss }
        return zip(loss, entropy).map { $0 - $1 }
    }

    func check(_ encoder: String, objectives: [String] = objectives.keys.sorted(), extra: String = "") throws {
        for objective in objectives {
            let loss = try losses(encoder: encoder, objective: objective, extra: extra)
            XCTAssertEqual(loss.count, 12, "\(encoder) + \(objective)")
            XCTAssertTrue(loss.allSatisfy(\.isFinite), "\(encoder) + \(objective): \(loss)")
            // The mean of the steps after the first three, not the last three alone: DINO's and
            // EsViT's KL divergence is measured against a teacher that sharpens and moves as it
            // trains, so over 12 steps at a constant 1e-3 it falls, then can drift back up.
            let first = loss.prefix(3).reduce(0, +) / 3, later = loss.dropFirst(3).reduce(0, +) / Double(loss.count - 3)
            XCTAssertLessThan(later, first, "\(encoder) + \(objective): the loss falls (\(loss))")
        }
    }

    func testViTTrainsWithEveryObjective() throws { try check("vit") }
    func testCvTTrainsWithTheViewObjectives() throws { try check("cvt", objectives: ["byol", "dino", "esvit"]) }
    func testViTForSmallDatasetsTrainsWithTheViewObjectives() throws { try check("vit-small-datasets", objectives: ["byol", "dino", "esvit"]) }

    /// Where the masked objectives do not apply, the refusal names the encoder, the objective and why.
    func testTheMaskedObjectivesRefuseTheEncodersTheyCannotMask() {
        for (encoder, reason) in [("cvt", "no flat sequence of patches"), ("vit-small-datasets", "read the neighbouring patches' pixels"),
                                 ("cct", "each token from an overlapping window"), ("t2t-vit", "unfold overlapping windows"),
                                 ("cross-vit", "no single sequence of patch tokens"),
                                 ("pit", "its stages pool the token grid"), ("nest", "its aggregations convolve and max-pool"),
                                 ("maxvit", "no patch tokens to hide"), ("levit", "four stride-2 convolutions"),
                                 ("mobilevit", "inverted residuals convolve the whole image"), ("sepvit", "overlapping convolutions"),
                                 ("twins-svt", "merge patches"), ("scalable-vit", "overlapping stride-4 convolution"),
                                 ("crossformer", "cross-scale embeddings"), ("regionvit", "regional tokens from whole regions")] {
            for objective in ["mae", "simmim", "mpp", "mp3"] {
                let text = "name: t\nencoder: {kind: \(encoder)}\nstages:\n  - pretrain:\n      objective: {kind: \(objective)}\n"
                XCTAssertThrowsError(try RecipeLoader.parse(text, file: "r.yaml")) { error in
                    let message = "\(error)"
                    XCTAssertTrue(message.contains("\(objective) masks patches") && message.contains("the \(encoder) encoder is not one") && message.contains(reason), message)
                }
            }
        }
    }
    func testSimpleViTTrainsWithEveryObjective() throws { try check("simple-vit") }
    func testTimmViTTrainsWithEveryObjective() throws { try check("timm-vit") }
    func testSimpleViTVariantsTrainWithEveryObjective() throws {
        try check("simple-vit", extra: ", register_tokens: 2, qk_norm: true")
        try check("simple-vit", objectives: ["byol", "dino", "esvit"], extra: ", patch_dropout: 0.25")
    }
    func testDeepViTTrainsWithEveryObjective() throws { try check("deepvit") }
    func testParallelViTTrainsWithEveryObjective() throws { try check("parallel-vit") }
    func testCCTTrainsWithTheViewObjectives() throws {
        try check("cct", objectives: ["byol", "dino", "esvit"])
        try check("cct", objectives: ["dino"], extra: ", positional_embedding: learnable, size: cct_2")
    }
    func testT2TViTTrainsWithTheViewObjectives() throws { try check("t2t-vit", objectives: ["byol", "dino", "esvit"]) }
    func testRvTTrainsWithTheGridObjectivesAndTheViewObjectives() throws {
        try check("rvt", objectives: ["simmim", "mpp", "byol", "dino", "esvit"])
    }
    func testXCiTTrainsWithTheGridObjectivesAndTheViewObjectives() throws {
        try check("xcit", objectives: ["simmim", "mpp", "byol", "dino", "esvit"], extra: ", cls_depth: 1")
    }
    /// A patch-token encoder that still cannot serve some masked objectives says which and why.
    func testRvTAndXCiTRefuseMAEAndMP3WithTheReason() {
        for (encoder, objective, reason) in [("rvt", "mae", "cannot encode MAE's random subset"), ("rvt", "mp3", "no position table for MP3 to leave out"),
                                             ("xcit", "mae", "cannot encode MAE's random subset"), ("xcit", "mp3", "queries from the tokens and keys from a context")] {
            let text = "name: t\nencoder: {kind: \(encoder)}\nstages:\n  - pretrain:\n      objective: {kind: \(objective)}\n"
            XCTAssertThrowsError(try RecipeLoader.parse(text, file: "r.yaml")) { error in
                let message = "\(error)"
                XCTAssertTrue(message.contains("\(objective) does not apply to the \(encoder) encoder") && message.contains(reason)
                              && message.contains("use simmim, mpp, byol, dino, esvit"), message)
            }
        }
    }
    func testPiTTrainsWithTheViewObjectives() throws { try check("pit", objectives: ["byol", "dino", "esvit"]) }
    func testNesTTrainsWithTheViewObjectives() throws { try check("nest", objectives: ["byol", "dino", "esvit"]) }
    func testMaxViTTrainsWithTheViewObjectives() throws { try check("maxvit", objectives: ["byol", "dino", "esvit"]) }
    func testLeViTTrainsWithTheViewObjectives() throws { try check("levit", objectives: ["byol", "dino", "esvit"]) }
    func testMobileViTTrainsWithTheViewObjectives() throws { try check("mobilevit", objectives: ["byol", "dino", "esvit"]) }
    func testSepViTTrainsWithTheViewObjectives() throws { try check("sepvit", objectives: ["byol", "dino", "esvit"]) }
    func testTwinsSVTTrainsWithTheViewObjectives() throws { try check("twins-svt", objectives: ["byol", "dino", "esvit"]) }
    func testScalableViTTrainsWithTheViewObjectives() throws { try check("scalable-vit", objectives: ["byol", "dino", "esvit"]) }
    func testCrossFormerTrainsWithTheViewObjectives() throws { try check("crossformer", objectives: ["byol", "dino", "esvit"]) }
    func testRegionViTTrainsWithTheViewObjectives() throws { try check("regionvit", objectives: ["byol", "dino", "esvit"]) }
    func testCrossViTTrainsWithTheViewObjectives() throws { try check("cross-vit", objectives: ["byol", "dino", "esvit"]) }
    /// Views an encoder cannot take are refused before anything runs, with the encoder's reason.
    func testViewSizesTheEncoderCannotTakeAreRefused() {
        let text = "name: t\nencoder: {kind: cross-vit}\nstages:\n  - pretrain:\n      objective: {kind: dino, augment: {local_size: 12}}\n"
        XCTAssertThrowsError(try RecipeLoader.parse(text, file: "r.yaml")) { error in
            let message = "\(error)"
            XCTAssertTrue(message.contains("local_size") && message.contains("12-pixel views do not fit the cross-vit encoder")
                          && message.contains("lg_patch_size 7 does not divide 12-pixel images"), message)
        }
    }
    func testCaiTTrainsWithEveryObjective() throws { try check("cait", extra: ", cls_depth: 1, layer_dropout: 0.1") }
}
