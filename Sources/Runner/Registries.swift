import Store

// The project's extension points, one list each. A new stage, objective, encoder, data set or
// weight format is one file (its settings, or its reader and writer) plus one line here; `workbench
// list`, `validate`, the README's recipe reference and bench-step read these lists.

/// The stage kinds a recipe may use.
public enum StageRegistry {
    public static let kinds: [any Stage.Type] = [
        PretrainStage.self, SupervisedStage.self, LinearProbeStage.self, KNNStage.self, FinetuneStage.self, ExtractStage.self,
    ]
}

/// The objectives a pretrain stage may name (`objective.kind`).
public enum ObjectiveRegistry {
    public static let kinds: [any ObjectiveSettings.Type] = [
        MAESettings.self, SimMIMSettings.self, MPPSettings.self, MP3Settings.self, BYOLSettings.self, DINOSettings.self, EsViTSettings.self,
    ]
}

/// The encoders a recipe may name (`encoder.kind`).
public enum EncoderRegistry {
    public static let kinds: [any EncoderSettings.Type] = [
        ViTSettings.self, SimpleViTSettings.self, CvTSettings.self, TimmViTSettings.self,
        DeepViTSettings.self, ParallelViTSettings.self, SmallViTSettings.self, CaiTSettings.self, CCTSettings.self, T2TSettings.self, RvTSettings.self, XCiTSettings.self, CrossViTSettings.self,
        PiTSettings.self, NesTSettings.self, MaxViTSettings.self, LeViTSettings.self, MobileViTSettings.self, SepViTSettings.self, TwinsSettings.self, ScalableViTSettings.self, CrossFormerSettings.self, RegionViTSettings.self,
    ]
}

/// The data sets a recipe may name (`data.dataset`).
public enum DataSetRegistry {
    public static let kinds: [any DataSetSettings.Type] = [
        FashionMNISTSettings.self, CIFAR10Settings.self, CIFAR100Settings.self, STL10Settings.self, IDXSettings.self, ArraysSettings.self,
        ImageFolderSettings.self,
    ]
}

/// The weight file formats the workbench reads (recognised from a file's content) and writes.
public enum WeightFormatRegistry {
    public static let formats: [any WeightFormat.Type] = [
        SafeTensors.self, TorchCheckpoint.self, NumpyArchive.self,
    ]
}
