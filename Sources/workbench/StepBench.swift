import ArgumentParser
import Data
import Encoders
import Foundation
import NN
import Objectives
import Runner
import TensorCore

/// `workbench bench-step`: one optimizer step (forward, backward, AdamW) of the supervised ViT at
/// the fixed configuration of tools/reference/torch_step_bench.py, its median time and images/s,
/// and the roofline: the step's matrix products timed alone as raw sgemm at the same shapes.
struct BenchStep: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "bench-step",
        abstract: "Time a training step (supervised or an objective's) against the raw sgemm time of its products.",
        discussion: "Same shapes as torch_step_bench.py: 28x28x1 images, patch 4, dim 192, depth 6, heads 3, dim_head 64, MLP 768, batch 256.")

    @Option(name: .customLong("batch"), help: "Batch size (torch_step_bench.py's B; default 256, or the recipe's with --recipe).") var batchOption: Int?
    var batch: Int { batchOption ?? 256 }
    @Option var dim = 192
    @Option var depth = 6
    @Option var heads = 3
    @Option(name: .customLong("dim-head")) var dimHead = 64
    @Option(name: .customLong("mlp-dim")) var mlpDim = 768
    @Option(help: "Timed steps after two warm-up steps (the median is reported).") var steps = 6
    @Option(help: "supervised, or an objective as torch_step_bench.py configures it (each objective's settings declare theirs): mae, simmim, mpp, mp3, dino (vit-pytorch's Dino: 3 channels, 4 views of 28 px), byol-pytorch (byol-pytorch's BYOL: 3 channels, its one augmentation), or dino-official and byol (the official view pipelines).") var objective = "supervised"

    @Option(help: "Time the first pretrain stage of this recipe instead: its encoder, objective, optimizer, views and batch size (or, without one, its supervised stage's encoder and batch size).") var recipe: String?
    @Option(help: "Time a supervised step of this encoder kind instead (batch 64 unless --batch, 28x28 px, patch 4 and the sizes above), as tools/zoo_step_bench.py times vit-pytorch's.") var encoder: String?
    @Option(help: "Image channels for --encoder (3 for the models vit-pytorch builds with 3 only: cait, xcit).") var channels = 1
    @Flag(name: .customLong("products"), help: "Also time every product shape inside the step against the same products alone, and print the step's time outside its products.") var productTimes = false

    /// Bad settings end with their message and a non-zero exit, without the usage line that
    /// ArgumentParser prints after a validation error thrown from `run`.
    func run() throws {
        try reportingUserErrors { try measure() }
    }

    func measure() throws {
        try requireCounts([("--batch", batchOption ?? 1), ("--dim", dim), ("--depth", depth), ("--heads", heads), ("--dim-head", dimHead),
                           ("--mlp-dim", mlpDim), ("--steps", steps), ("--channels", channels)])
        if let recipe { return try runRecipe(recipe) }
        if let encoder { return try runEncoder(encoder) }
        var config = ViTConfig()
        (config.dim, config.depth, config.heads, config.dimHead, config.mlpDim) = (dim, depth, heads, dimHead, mlpDim)
        if objective != "supervised" { return try runObjective(config) }
        timeSupervised(ViT(config, initializer: Initializer(seed: 0)), batch: batch,
                       title: "bench-step supervised: ViT dim \(dim) depth \(depth) heads \(heads) dim_head \(dimHead) mlp \(mlpDim), batch \(batch), \(Self.threadsAndCore)")
    }

    /// A supervised step (cross-entropy on random labels, AdamW) of `model` on 28x28x1 noise.
    func timeSupervised(_ model: some HiddenLayerEncoder, batch: Int, channels: Int = 1, title: String) {
        let optimizer = AdamW(model.parameters, learningRate: 1e-4)
        let rng = RandomStream(seed: 0, purpose: "bench")
        let x = Tensor.uniform([batch, channels, 28, 28], rng: rng)
        let labels = (0..<batch).map { _ in rng.nextInt(below: 10) }
        func trainStep() {
            let loss = model.hidden(x, layer: "logits").crossEntropy(.labels(labels))
            optimizer.zeroGrad()
            loss.backward()
            optimizer.step()
        }
        let step = medianSeconds(repeats: steps, warmups: 2, trainStep)
        print(title)
        printStep(step, batch: batch)
        printRoofline(stepSeconds: step, step: trainStep)
    }

    /// The step's median time, images/s and the process's peak resident set so far (the model, its
    /// optimizer state and the step's largest moment; read before the roofline allocates anything).
    func printStep(_ step: Double, batch: Int, _ what: String = "") {
        print(String(format: "step median %.1f ms  %.1f img/s%@  peak memory %.0f MiB", step * 1e3, Double(batch) / step, what, Self.peakResidentMiB))
    }

    /// "2 threads, OpenBLAS core SkylakeX": what a step's time and bits depend on beyond its configuration.
    static var threadsAndCore: String { "\(counted(Parallel.threads, "thread")), OpenBLAS core \(blasCore)" }

    /// getrusage's ru_maxrss (KiB on Linux, bytes on macOS) in MiB.
    static var peakResidentMiB: Double {
        var usage = rusage()
        #if canImport(Glibc)
        getrusage(RUSAGE_SELF.rawValue, &usage)
        return Double(usage.ru_maxrss) / 1024
        #else
        getrusage(RUSAGE_SELF, &usage)
        return Double(usage.ru_maxrss) / (1024 * 1024)
        #endif
    }

    /// Records the products one step issues, times them alone as raw sgemm at the same shapes
    /// (products issued many times at one shape, like attention's per-head ones, spread over the
    /// pool as the kernels do), and prints the step's fraction of that roofline.
    func printRoofline(stepSeconds step: Double, step body: () -> Void) {
        let shapes = ProductRecorder.record(body).sorted { ($0.value, $0.key.m, $0.key.n, $0.key.k) > ($1.value, $1.key.m, $1.key.n, $1.key.k) }
        let flops = shapes.reduce(0.0) { $0 + $1.key.flops * Double($1.value) }
        let maxA = shapes.map { $0.key.m * $0.key.k }.max() ?? 1, maxB = shapes.map { $0.key.k * $0.key.n }.max() ?? 1
        let maxC = shapes.map { $0.key.m * $0.key.n }.max() ?? 1
        let rng = RandomStream(seed: 0, purpose: "roofline")
        let a = Tensor.uniform([maxA], rng: rng), b = Tensor.uniform([maxB], rng: rng), c = Storage(uninitializedCount: maxC)
        func rawProducts(_ p: ProductShape, _ calls: Int) {
            let lda = p.transA ? p.m : p.k, ldb = p.transB ? p.k : p.n
            if calls == 1 {
                sgemm(p.transA, p.transB, p.m, p.n, p.k, 1, a.base, lda, b.base, ldb, 0, c.base, p.n)
            } else {
                Parallel.forChunks(calls, grain: 1) { r in
                    withUnsafeTemporaryAllocation(of: Float.self, capacity: p.m * p.n) { c in
                        for _ in r { cblasProduct(p.transA, p.transB, p.m, p.n, p.k, 1, a.base, lda, b.base, ldb, 0, c.baseAddress!, p.n) }
                    }
                }
            }
        }
        let raw = medianSeconds(repeats: steps, warmups: 1) { for (p, calls) in shapes { rawProducts(p, calls) } }
        print(String(format: "products: %d calls at %d shapes, %.2f GFLOP per step; raw sgemm alone %.1f ms (%.1f GFLOP/s); step at %.1f GFLOP/s = %.2f of the roofline",
                     shapes.reduce(0) { $0 + $1.value }, shapes.count, flops / 1e9, raw * 1e3, flops / raw / 1e9, flops / step / 1e9, raw / step))
        guard productTimes else { return }
        // Each shape's products inside `steps` steps (per step), against the same products alone.
        let times = ProductRecorder.time { for _ in 0..<steps { body() } }
        print("products inside the step, by shape (ms per step; kernels' own products, marked *, summed over threads and divided by \(Parallel.threads)):")
        var inStep = 0.0, alone = 0.0
        for (p, calls) in shapes.sorted(by: { (times[$0.key]?.seconds ?? 0) > (times[$1.key]?.seconds ?? 0) }) {
            guard let t = times[p] else { continue }
            let mine = t.seconds / Double(steps) / (t.inKernel ? Double(Parallel.threads) : 1)
            let rawShape = medianSeconds(repeats: 3, warmups: 1) { rawProducts(p, calls) }
            inStep += mine
            alone += rawShape
            print(String(format: "  %@ %6d x %5d x %6d  %5d calls%@  in the step %8.2f ms  alone %8.2f ms",
                         "\(p.transA ? "T" : "N")\(p.transB ? "T" : "N")", p.m, p.n, p.k, calls, t.inKernel ? "*" : " ", mine * 1e3, rawShape * 1e3))
        }
        print(String(format: "products: %.1f ms inside the step (alone %.1f ms); the step's %.1f ms less its products: %.1f ms (%.0f%%)",
                     inStep * 1e3, alone * 1e3, step * 1e3, (step - inStep) * 1e3, 100 * (step - inStep) / step))
    }

    /// An objective's step at torch_step_bench.py's settings: the configuration the objective's
    /// settings declare as a benchmark (`ObjectiveSettings.benchmarks`) on this ViT, built as a
    /// run builds it (images of uniform noise).
    func runObjective(_ config: ViTConfig) throws {
        let benchmarks = ObjectiveRegistry.kinds.flatMap { $0.anyBenchmarks }
        guard let benchmark = benchmarks.first(where: { $0.name == objective }) else {
            throw ValidationError("--objective must be supervised or one of \(benchmarks.map(\.name).joined(separator: ", ")), not '\(objective)'")
        }
        var vit = ViTSettings()
        vit.config = config
        var recipe = Recipe(name: "bench", stages: [StageEntry(PretrainStage(objective: benchmark.settings))])
        recipe.encoder = EncoderSection(vit)
        (recipe.data.channels, recipe.data.mean, recipe.data.std) = (benchmark.channels, benchmark.mean, benchmark.std)
        let input = recipe.encoderInput
        let encoder = ViT(vit.config(for: input), initializer: Initializer(seed: 0))
        guard let model = benchmark.settings.make(encoder: encoder, newEncoder: { ViT(vit.config(for: input), initializer: Initializer(seed: 2)) },
                                                  recipe: recipe, initializer: Initializer(seed: 1), seed: 0) else {
            throw ValidationError("\(objective) cannot wrap a ViT")
        }
        let optimizer = AdamW(model.parameters.filter { !$0.isFrozen }, learningRate: 1e-4)
        print("bench-step \(objective): ViT dim \(config.dim) depth \(config.depth) heads \(config.heads) dim_head \(config.dimHead) mlp \(config.mlpDim), \(input.channels) channel(s), batch \(batch), \(Self.threadsAndCore)")
        if let pipeline = benchmark.settings.views(recipe) {
            return timeViews(model, pipeline: pipeline, optimizer: optimizer, batch: batch, channels: input.channels, side: input.imageSize)
        }
        let x = Tensor.uniform([batch] + recipe.data.imageShape, rng: RandomStream(seed: 0, purpose: "bench"))
        let trainStep = Self.stepper(model, optimizer) { model.loss(x).loss }
        let step = medianSeconds(repeats: steps, warmups: 2, trainStep)
        printStep(step, batch: batch)
        printRoofline(stepSeconds: step, step: trainStep)
    }

    /// A supervised step of an encoder kind at the bench's sizes (what tools/zoo_step_bench.py
    /// times for vit-pytorch's model of the same kind).
    func runEncoder(_ kind: String) throws {
        guard EncoderRegistry.kinds.contains(where: { $0.kind == kind }) else {
            throw ValidationError("--encoder must be one of \(EncoderRegistry.kinds.map { $0.kind }.joined(separator: ", ")), not '\(kind)'")
        }
        let section: EncoderSection
        var sized: EncoderSection?
        let keys = EncoderRegistry.kinds.first { $0.kind == kind }!.keys
        do {
            // The bench's sizes, in the keys this kind has (CCT: mlp_ratio, and two tokeniser
            // convolutions; T2T-ViT: two soft splits), as tools/zoo_step_bench.py builds them.
            let sizes: [(String, String)] = [("patch_size", "4"), ("dim", "\(dim)"), ("depth", "\(depth)"), ("heads", "\(heads)"),
                                             ("dim_head", "\(dimHead)"), ("mlp_dim", "\(mlpDim)"), ("mlp_ratio", "\(Double(mlpDim) / Double(dim))"),
                                             ("conv_layers", "2"), ("t2t_layers", "[[3, 2], [3, 2]]")]
            // Kinds without a single `dim` (CrossViT's two branches), hierarchical ones (stages that
            // downsample) and any that cannot take the bench's sizes at 28 px run at their own defaults.
            let yaml = "kind: \(kind)\n" + sizes.filter { keys.contains("dim") && keys.contains($0.0) }.map { "\($0.0): \($0.1)\n" }.joined()
            let type = EncoderRegistry.kinds.first { $0.kind == kind }!
            sized = type.isHierarchical ? nil : (try? RecipeLoader.section(EncoderSection.self, yaml: yaml, file: "--encoder \(kind)"))
                .flatMap { $0.settings.check(EncoderInput(imageSize: 28, channels: channels, classes: 10)) == nil ? $0 : nil }
            section = try sized ?? RecipeLoader.section(EncoderSection.self, yaml: "kind: \(kind)\n", file: "--encoder \(kind)")
        } catch { throw ValidationError("\(error)") }
        let batch = batchOption ?? 64
        if let (key, problem) = section.settings.check(EncoderInput(imageSize: 28, channels: channels, classes: 10)) {
            throw ValidationError("--encoder \(kind) at its defaults does not take 28-pixel images: \(key): \(problem)")
        }
        let (model, _) = section.make(EncoderInput(imageSize: 28, channels: channels, classes: 10), seed: 0)
        timeSupervised(model, batch: batch, channels: channels,
                       title: "bench-step --encoder \(kind): \(sized != nil && keys.contains("dim") ? "dim \(dim) depth \(depth) heads \(heads) dim_head \(dimHead) mlp \(mlpDim)" : "its default sizes"), \(model.parameters.reduce(0) { $0 + $1.value.count }) parameters, \(channels) channel\(channels == 1 ? "" : "s"), batch \(batch), \(Self.threadsAndCore)")
    }

    /// The recipe's first pretrain stage: its encoder and objective built as the run builds them,
    /// its optimizer, and (for the view objectives) its view pipeline, on images of uniform noise.
    func runRecipe(_ path: String) throws {
        let recipe: Recipe
        do { recipe = try RecipeLoader.load(path: RecipeLoader.find(path) ?? path) } catch { throw ValidationError("\(error)") }
        guard let stage = recipe.stages.lazy.compactMap({ $0.settings as? PretrainStage }).first else {
            // A supervised recipe: its encoder's supervised step at its batch size.
            guard let supervised = recipe.stages.lazy.compactMap({ $0.settings as? SupervisedStage }).first else {
                throw ValidationError("\(path) has no pretrain or supervised stage to time")
            }
            let (encoder, _) = recipe.encoder.make(recipe.encoderInput, seed: recipe.seed)
            let batch = batchOption ?? supervised.settings.training.batchSize
            return timeSupervised(encoder, batch: batch, channels: recipe.data.imageShape[0],
                                  title: "bench-step \(path): supervised \(recipe.encoder.kind) (\(encoder.parameters.reduce(0) { $0 + $1.value.count }) parameters), batch \(batch), \(Self.threadsAndCore)")
        }
        let seed = recipe.seed
        let input = recipe.encoderInput
        let (encoder, _) = recipe.encoder.make(input, seed: seed)
        let initializer = Initializer(scheme: recipe.encoder.initScheme, seed: seed &+ 1)
        guard let model = stage.objective.make(encoder: encoder, newEncoder: { recipe.encoder.make(input, seed: seed &+ 2).0 },
                                               recipe: recipe, initializer: initializer, seed: seed) else {
            throw ValidationError("\(type(of: stage.objective).kind) cannot wrap the \(recipe.encoder.kind) encoder")
        }
        let batch = batchOption ?? stage.training.batchSize
        let optimizer = stage.training.makeOptimizer(model.parameters.filter { !$0.isFrozen })
        let shape = recipe.data.imageShape
        print("bench-step \(path): \(type(of: stage.objective).kind) on \(recipe.encoder.kind) (\(encoder.parameters.reduce(0) { $0 + $1.value.count }) parameters), \(shape.map(String.init).joined(separator: "x")) images, batch \(batch), \(Self.threadsAndCore)")
        if let pipeline = stage.objective.views(recipe) {
            return timeViews(model, pipeline: pipeline, optimizer: optimizer, batch: batch, channels: shape[0], side: shape[1])
        }
        let x = Tensor.uniform([batch] + shape, rng: RandomStream(seed: 0, purpose: "bench"))
        let trainStep = Self.stepper(model, optimizer) { model.loss(x).loss }
        let step = medianSeconds(repeats: steps, warmups: 2, trainStep)
        printStep(step, batch: batch)
        printRoofline(stepSeconds: step, step: trainStep)
    }

    /// One optimizer step of `model` per call (its schedule hooks around it, as the run calls them).
    static func stepper(_ model: any Objective, _ optimizer: Optimizer, loss: @escaping () -> Tensor) -> () -> Void {
        var index = 0
        return {
            model.willStep(index, of: 1000, stepsPerEpoch: 100)
            let value = loss()
            optimizer.zeroGrad()
            value.backward()
            optimizer.step()
            model.afterStep(index, of: 1000)
            index += 1
        }
    }

    /// A view objective's step on views made beforehand (the loader makes them on its own thread),
    /// the view pipeline's own throughput on one thread, and the step's roofline.
    func timeViews(_ model: any Objective, pipeline: ViewPipeline, optimizer: Optimizer, batch: Int, channels: Int, side: Int) {
        let rng = RandomStream(seed: 0, purpose: "bench")
        let images = (0..<batch).map { _ in
            AugmentImage(channels: channels, height: side, width: side, pixels: (0..<(channels * side * side)).map { _ in rng.nextFloat() })
        }
        let augmentRng = RandomStream(seed: 0, purpose: "views")
        var views: [Tensor] = []
        let augment = medianSeconds(repeats: steps, warmups: 1) {
            views = pipeline.makeViews(images: images, mean: [0.5], std: [0.25], rng: augmentRng)
        }
        let trainStep = Self.stepper(model, optimizer) { model.loss(views: views).loss }
        let step = medianSeconds(repeats: steps, warmups: 2, trainStep)
        print("views per image: \(pipeline.views.map { "\($0.size)px" }.joined(separator: ", "))")
        printStep(step, batch: batch, " (forward, backward, AdamW and the EMA teacher update)")
        print(String(format: "augmentation on one thread: %.1f ms a batch, %.0f img/s (%.1fx the step's consumption)",
                     augment * 1e3, Double(batch) / augment, step / augment))
        printRoofline(stepSeconds: step, step: trainStep)
    }
}
