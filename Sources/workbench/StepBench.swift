import ArgumentParser
import Data
import Encoders
import Foundation
import NN
import Objectives
import Runner
import TensorCore

/// `workbench bench-step`: one optimizer step (forward, backward, AdamW) of the supervised ViT at
/// the fixed configuration of shared/reference/torch_step_bench.py, its median time and images/s,
/// and the roofline: the step's matrix products timed alone as raw sgemm at the same shapes.
struct BenchStep: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "bench-step",
        abstract: "Time a supervised ViT training step against the raw sgemm time of its products.",
        discussion: "Same shapes as torch_step_bench.py: 28x28x1 images, patch 4, dim 192, depth 6, heads 3, dim_head 64, MLP 768, batch 256.")

    @Option(help: "Batch size (torch_step_bench.py's B).") var batch = 256
    @Option var dim = 192
    @Option var depth = 6
    @Option var heads = 3
    @Option(name: .customLong("dim-head")) var dimHead = 64
    @Option(name: .customLong("mlp-dim")) var mlpDim = 768
    @Option(help: "Timed steps after two warm-up steps (the median is reported).") var steps = 6
    @Option(help: "supervised, or an objective as torch_step_bench.py configures it: mae, simmim, mpp, mp3, dino (vit-pytorch's Dino: 3 channels, 4 views of 28 px), or dino-official and byol (the recipes' view pipelines).") var objective = "supervised"

    func run() throws {
        var config = ViTConfig()
        (config.dim, config.depth, config.heads, config.dimHead, config.mlpDim) = (dim, depth, heads, dimHead, mlpDim)
        if objective != "supervised" { return try runObjective(config) }
        let model = ViT(config, initializer: Initializer(seed: 0))
        let optimizer = AdamW(model.parameters, learningRate: 1e-4)
        let rng = RandomStream(seed: 0, purpose: "bench")
        let x = Tensor.uniform([batch, 1, 28, 28], rng: rng)
        let labels = (0..<batch).map { _ in rng.nextInt(below: 10) }
        let step = medianSeconds(repeats: steps, warmups: 2) {
            let loss = model(x).crossEntropy(.labels(labels))
            optimizer.zeroGrad()
            loss.backward()
            optimizer.step()
        }

        // The step's products, as the engine issues them: (transA, transB, m, n, k, repeats).
        let tokens = config.patchCount + 1, rows = batch * tokens, inner = heads * dimHead
        var products: [(Bool, Bool, Int, Int, Int, Int)] = []
        func linear(_ r: Int, _ inF: Int, _ outF: Int, inputGrad: Bool = true) {
            products.append((false, true, r, outF, inF, 1))
            if inputGrad { products.append((false, false, r, inF, outF, 1)) }
            products.append((true, false, outF, inF, r, 1))
        }
        linear(batch * config.patchCount, config.patchDim, dim, inputGrad: false)
        for _ in 0..<depth {
            linear(rows, dim, 3 * inner)
            let pairs = batch * heads
            products += [(false, true, tokens, tokens, dimHead, pairs), (false, false, tokens, dimHead, tokens, pairs),
                         (true, false, tokens, dimHead, tokens, pairs), (false, true, tokens, tokens, dimHead, pairs),
                         (false, false, tokens, dimHead, tokens, pairs), (true, false, tokens, dimHead, tokens, pairs)]
            linear(rows, inner, dim)
            linear(rows, dim, mlpDim)
            linear(rows, mlpDim, dim)
        }
        linear(batch, dim, config.numClasses)
        let flops = products.reduce(0.0) { $0 + 2 * Double($1.2) * Double($1.3) * Double($1.4) * Double($1.5) }
        let maxA = products.map { $0.2 * $0.4 }.max()!, maxB = products.map { $0.4 * $0.3 }.max()!, maxC = products.map { $0.2 * $0.3 }.max()!
        let a = Tensor.uniform([maxA], rng: rng), b = Tensor.uniform([maxB], rng: rng), c = Storage(uninitializedCount: maxC)
        // Raw: every product once, small per-head ones spread over the pool as the attention kernel does.
        func rawPass() {
            for (ta, tb, m, n, k, repeats) in products {
                if repeats == 1 {
                    sgemm(ta, tb, m, n, k, 1, a.base, ta ? m : k, b.base, tb ? k : n, 0, c.base, n)
                } else {
                    Parallel.forChunks(repeats, grain: 1) { r in
                        withUnsafeTemporaryAllocation(of: Float.self, capacity: m * n) { out in
                            for _ in r { sgemm(ta, tb, m, n, k, 1, a.base, ta ? m : k, b.base, tb ? k : n, 0, out.baseAddress!, n) }
                        }
                    }
                }
            }
        }
        let raw = medianSeconds(repeats: steps, rawPass)
        print("bench-step supervised: ViT dim \(dim) depth \(depth) heads \(heads) dim_head \(dimHead) mlp \(mlpDim), batch \(batch), \(Parallel.threads) threads")
        print(String(format: "step median %.1f ms  %.1f img/s", step * 1e3, Double(batch) / step))
        print(String(format: "products: %.1f GFLOP per step; raw sgemm alone %.1f ms (%.1f GFLOP/s); step at %.1f GFLOP/s = %.2f of the roofline",
                     flops / 1e9, raw * 1e3, flops / raw / 1e9, flops / step / 1e9, raw / step))
    }

    /// An objective's step at torch_step_bench.py's settings (images of uniform noise as there).
    func runObjective(_ config: ViTConfig) throws {
        let encoder = ViT(config, initializer: Initializer(seed: 0))
        let initializer = Initializer(seed: 1)
        let model: any Objective
        switch objective {
        case "mae":
            var c = MAE.Config()
            (c.maskingRatio, c.decoderDim, c.decoderDepth, c.decoderHeads, c.decoderDimHead) = (0.75, 128, 2, 8, 64)
            model = MAE(encoder: encoder, config: c, initializer: initializer, maskSeed: 0)
        case "simmim":
            var c = SimMIM.Config()
            (c.maskingRatio, c.vitPytorchScale) = (0.5, true)
            model = SimMIM(encoder: encoder, config: c, patchSize: config.patchHeight, imageSize: (28, 28), initializer: initializer, maskSeed: 0)
        case "mpp":
            var c = MPP.Config()
            (c.maskProb, c.randomPatchProb, c.replaceProb) = (0.15, 0.30, 0.50)
            model = MPP(encoder: encoder, config: c, channels: 1, mean: [0], std: [1], initializer: initializer, seed: 0)
        case "mp3":
            model = MP3(encoder: encoder, config: MP3.Config(), initializer: initializer, maskSeed: 0)
        case "dino", "dino-official", "byol":
            return try runSiamese(config)
        default:
            throw ValidationError("--objective must be supervised, mae, simmim, mpp, mp3, dino, dino-official or byol, not '\(objective)'")
        }
        let optimizer = AdamW(model.parameters, learningRate: 1e-4)
        let x = Tensor.uniform([batch, 1, 28, 28], rng: RandomStream(seed: 0, purpose: "bench"))
        let step = medianSeconds(repeats: steps, warmups: 2) {
            let loss = model.loss(x).loss
            optimizer.zeroGrad()
            loss.backward()
            optimizer.step()
        }
        print("bench-step \(objective): ViT dim \(dim) depth \(depth) heads \(heads) dim_head \(dimHead) mlp \(mlpDim), batch \(batch), \(Parallel.threads) threads")
        print(String(format: "step median %.1f ms  %.1f img/s", step * 1e3, Double(batch) / step))
    }

    /// A teacher-student step on views made beforehand (the loader makes them on its own thread),
    /// plus the view pipeline's throughput on one thread for the same batch.
    func runSiamese(_ base: ViTConfig) throws {
        var config = base
        let model: any Objective
        let pipeline: ViewPipeline
        let initializer = Initializer(seed: 1)
        switch objective {
        case "dino":
            // torch_step_bench.py: Dino(vit(channels=3), image_size=28, hidden_layer='to_latent',
            // projection_hidden_size=256, projection_layers=3, num_classes_K=4096, local_upper_crop_scale=0.4,
            // global_lower_crop_scale=0.5).
            config.channels = 3
            var c = DINO.Config.vitPytorchDefaults
            (c.outDim, c.hiddenDim, c.headLayers) = (4096, 256, 3)
            model = DINO(student: ViT(config, initializer: Initializer(seed: 0)), teacher: ViT(config, initializer: Initializer(seed: 2)),
                         imageShape: [3, 28, 28], config: c, initializer: initializer)
            pipeline = DINOSettings.vitPytorchAugment.pipeline(imageSize: 28)
        case "dino-official":
            let settings = DINOSettings()
            model = DINO(student: ViT(config, initializer: Initializer(seed: 0)), teacher: ViT(config, initializer: Initializer(seed: 2)),
                         imageShape: [1, 28, 28], config: settings.config, initializer: initializer)
            pipeline = settings.augment.pipeline(imageSize: 28)
        default:
            let settings = BYOLSettings()
            model = BYOL(online: ViT(config, initializer: Initializer(seed: 0)), target: ViT(config, initializer: Initializer(seed: 2)),
                         imageShape: [1, 28, 28], config: settings.config, initializer: initializer)
            pipeline = settings.augment.pipeline(imageSize: 28)
        }
        let optimizer = AdamW(model.parameters.filter { !$0.isFrozen }, learningRate: 1e-4)
        let rng = RandomStream(seed: 0, purpose: "bench")
        let images = (0..<batch).map { _ in
            AugmentImage(channels: config.channels, height: 28, width: 28, pixels: (0..<(config.channels * 784)).map { _ in rng.nextFloat() })
        }
        let augmentRng = RandomStream(seed: 0, purpose: "views")
        var views: [Tensor] = []
        let augment = medianSeconds(repeats: steps, warmups: 1) {
            views = pipeline.makeViews(images: images, mean: [0.5], std: [0.25], rng: augmentRng)
        }
        var index = 0
        let step = medianSeconds(repeats: steps, warmups: 2) {
            model.willStep(index, of: 1000, stepsPerEpoch: 100)
            let loss = model.loss(views: views).loss
            optimizer.zeroGrad()
            loss.backward()
            optimizer.step()
            model.afterStep(index, of: 1000)
            index += 1
        }
        print("bench-step \(objective): ViT dim \(config.dim) depth \(config.depth) heads \(config.heads) dim_head \(config.dimHead) mlp \(config.mlpDim), \(config.channels) channel(s), batch \(batch), \(Parallel.threads) threads")
        print("views per image: \(pipeline.views.map { "\($0.size)px" }.joined(separator: ", "))")
        print(String(format: "step median %.1f ms  %.1f img/s (forward, backward, AdamW and the EMA teacher update)", step * 1e3, Double(batch) / step))
        print(String(format: "augmentation on one thread: %.1f ms a batch, %.0f img/s (%.1fx the step's consumption)",
                     augment * 1e3, Double(batch) / augment, step / augment))
    }
}
