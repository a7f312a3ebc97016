import Data
import Encoders
import NN
import Objectives

/// `objective: {kind: dino}`: DINO (Caron et al. 2021) with the official loss, head (bottleneck,
/// weight-normalised last layer frozen for the first epoch), temperatures (student 0.1, teacher
/// 0.04 warmed up to 0.07 over the first epoch),
/// centring (0.9), teacher EMA (0.996 to 1 on a cosine), multi-crop and weight-decay schedule
/// (0.04 to 0.4): DINO.Config's defaults. `mode: vit-pytorch` switches to vit-pytorch 1.7.14's
/// Dino (its head, temperatures 0.9 / 0.04, constant EMA 0.9, two local crops at the full size
/// seen by the student only) for comparison with the reference recipe.
public struct DINOSettings: ObjectiveSettings {
    public static let kind = "dino"
    public static let summary = "DINO: self-distillation of a centred, sharpened EMA teacher over multi-crop views (Caron et al. 2021)"
    public static var trainingDefaults: TrainingSettings {
        var t = TrainingSettings()
        (t.lr, t.minLr, t.betas, t.weightDecay, t.weightDecayEnd, t.warmupEpochs, t.epochs) = (5e-4, 1e-6, [0.9, 0.999], 0.04, 0.4, 1, 3)
        (t.decayAll, t.horizontalFlip, t.gradientClip) = (false, false, 3.0)
        return t
    }

    public static var officialAugment: AugmentSection {
        var a = AugmentSection()
        (a.globalScale, a.localCrops, a.localSize, a.localScale) = ([0.4, 1.0], 6, 12, [0.05, 0.4])
        return a
    }

    /// vit-pytorch's Dino: one colour pipeline for all crops (jitter 0.8 with p 0.3, grayscale
    /// 0.2, flip, 3x3 blur sigma 1-2 with p 0.2), global crops of 50-100%, two local crops of
    /// 5-40% resized to the full size.
    public static var vitPytorchAugment: AugmentSection {
        var a = AugmentSection()
        (a.globalScale, a.localCrops, a.localScale) = ([0.5, 1.0], 2, [0.05, 0.4])
        (a.jitter, a.jitterP, a.grayscale, a.blur, a.blurSigma, a.solarize) = ([0.8, 0.8, 0.8, 0.2], 0.3, 0.2, [0.2, 0.2, 0.2], [1, 2], [0, 0, 0])
        return a
    }

    public var config = DINO.Config()
    public var augment = DINOSettings.officialAugment

    public init() {}

    static let temperature = Check<Double>.that({ $0 > 0 }) { "a temperature must be positive, got \(plainNumber($0))" }
    static let momentum = Check<Double>.that({ $0 >= 0 && $0 <= 1 }) { _ in "is a momentum: give a number in [0, 1]" }

    public static let fields: [Field<DINOSettings>] = [
        // First: vit-pytorch mode changes the defaults of the keys after it.
        Field("mode", help: "official | vit-pytorch (vit-pytorch 1.7.14's Dino: its head, student_temp 0.9, teacher_temp 0.04, constant EMA 0.9, 2 full-size local crops for the student only; out_dim 4096 as the reference recipe)",
              read: { s, c in
                  guard try c.choice("mode", ["official", "vit-pytorch"], s.config.vitPytorch ? "vit-pytorch" : "official") == "vit-pytorch",
                        !s.config.vitPytorch else { return }
                  s.config = DINO.Config.vitPytorchDefaults
                  s.config.outDim = 4096   // the reference recipe's num_classes_K
                  s.augment = DINOSettings.vitPytorchAugment
              }, write: { $0.config.vitPytorch ? "vit-pytorch" : "official" }),
        .value("hidden_layer", \.config.hiddenLayer, "the encoder output the heads read"),
        .value("out_dim", \.config.outDim, "prototypes: the head's output width", .positive),
        .value("hidden_dim", \.config.hiddenDim, "the head's hidden width", .positive),
        .value("bottleneck_dim", \.config.bottleneckDim, "the head's bottleneck width", .positive),
        .value("head_layers", \.config.headLayers, "linear layers before the bottleneck", .that({ $0 >= 2 }) { _ in "the head needs at least 2 layers" }),
        .value("norm_last_layer", \.config.normLastLayer, "fix the weight-normalised last layer's norm to 1"),
        .value("student_temp", \.config.studentTemperature, "student softmax temperature", temperature),
        .value("teacher_temp", \.config.teacherTemperature, "teacher softmax temperature after the warmup", temperature),
        .value("warmup_teacher_temp", \.config.warmupTeacherTemperature, "teacher temperature at the start", temperature),
        .value("warmup_teacher_temp_epochs", \.config.warmupTeacherTemperatureEpochs, "epochs of the linear teacher-temperature warmup", .nonNegative),
        .value("center_momentum", \.config.centerMomentum, "EMA momentum of the teacher's centre", momentum),
        .value("teacher_momentum", \.config.teacherMomentum, "the teacher's EMA momentum at the start", momentum),
        .choice("momentum_schedule", \.config.momentumSchedule, "cosine (to 1) | constant"),
        .value("freeze_last_layer_epochs", \.config.freezeLastLayerEpochs, "epochs the head's last layer stays frozen", .nonNegative),
        .section("augment", \.augment, "the multi-crop views (defaults: 6 local crops of 12 pixels, local_scale [0.05, 0.4])"),
    ]

    public func check() -> (key: String, problem: String)? {
        config.vitPytorch && augment.localCrops != 2 ? ("augment", "vit-pytorch's Dino uses exactly 2 local crops (augment.local_crops: 2)") : nil
    }

    public static var benchmarks: [ObjectiveBenchmark<DINOSettings>] {
        // torch_step_bench.py: Dino(vit(channels=3), image_size=28, hidden_layer='to_latent', projection_hidden_size=256,
        // projection_layers=3, num_classes_K=4096, local_upper_crop_scale=0.4, global_lower_crop_scale=0.5).
        var vitPytorch = DINOSettings()
        vitPytorch.config = .vitPytorchDefaults
        (vitPytorch.config.outDim, vitPytorch.config.hiddenDim, vitPytorch.config.headLayers) = (4096, 256, 3)
        vitPytorch.augment = vitPytorchAugment
        return [ObjectiveBenchmark("dino", vitPytorch, channels: 3), ObjectiveBenchmark("dino-official", DINOSettings())]
    }

    public func validate(_ recipe: Recipe) throws {
        try checkHiddenLayer(config.hiddenLayer, recipe)
        let a = augment
        try a.validate(recipe)
        let global = a.globalSize ?? recipe.data.imageSize
        if config.hiddenLayer != "pooled" && a.localCrops > 0 && (a.localSize ?? global) != global {
            throw RecipeIssue(path: ["hidden_layer"], message: "'\(config.hiddenLayer)' has a different width for \(a.localSize ?? global)-pixel local crops than for the global ones; use hidden_layer: pooled, or make augment.local_size equal to the global size")
        }
    }

    public func views(_ recipe: Recipe) -> ViewPipeline? { augment.pipeline(imageSize: recipe.data.imageSize) }

    public func make(encoder: any HiddenLayerEncoder, newEncoder: () -> any HiddenLayerEncoder, recipe: Recipe, initializer: Initializer,
                     seed: UInt64) -> (any Objective)? {
        DINO(student: encoder, teacher: newEncoder(), imageShape: recipe.data.imageShape,
             config: config, initializer: initializer)
    }
}
