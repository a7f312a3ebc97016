import Foundation

/// The README's recipe reference, made from the registries and the sections' fields, so that the
/// documentation cannot drift from what `validate` accepts: `workbench list --reference` prints it
/// and a test checks that README.md holds exactly this text between its markers.
public enum RecipeReference {
    public static let begin = "<!-- recipe reference: made by `workbench list --reference`; edit the fields, not this table -->"
    public static let end = "<!-- end of the recipe reference -->"

    public static func markdown() -> String {
        var out: [String] = [begin, ""]
        func table<S>(_ title: String, _ intro: String? = nil, _ fields: [Field<S>], _ defaults: S) {
            out.append("**\(title)**" + (intro.map { " \($0)" } ?? ""))
            out.append("")
            let rows = fields.filter { $0.applies(defaults) }
            if rows.isEmpty {
                out.append("No keys of its own.")
            } else {
                out.append("| key | default | meaning |")
                out.append("|---|---|---|")
                for f in rows { out.append("| `\(f.key)` | \(defaultCell(f.write(defaults))) | \(cell(f.help)) |") }
            }
            out.append("")
        }
        table("Top level", "(`name` and `stages` are required)", Recipe.fields.filter { $0.key != "checkpoint" }, Recipe())
        table("`checkpoint`", nil, CheckpointSection.fields, CheckpointSection())

        out.append("**`data`**: `dataset` is one of \(DataSetRegistry.kinds.map { "`\($0.kind)`" }.joined(separator: ", ")); the other keys' defaults are the data set's.")
        out.append("")
        table("`data` (every data set)", nil, DataSection.fields, DataSection())
        func dataSet<S: DataSetSettings>(_ kind: S.Type) {
            table("`data.dataset: \(kind.kind)`", "— \(kind.summary). Default path \(kind.defaultPath).", kind.fields, kind.init())
        }
        for kind in DataSetRegistry.kinds { dataSet(kind) }

        out.append("**`encoder`**: `kind` is one of \(EncoderRegistry.kinds.map { "`\($0.kind)`" }.joined(separator: ", ")) (default `vit`); "
                   + "`init` is `pytorch` (vit-pytorch parity, the default) or `official` (xavier, truncated normal 0.02). "
                   + "`weights: PATH` starts the encoder from a weights file before the first stage (formats: "
                   + WeightFormatRegistry.formats.map { "\($0.name)" }.joined(separator: ", ")
                   + ", recognised from the content; the workbench's checkpoints, vit-pytorch state_dicts); `weights_prefix` is the prefix of the "
                   + "encoder's names in the file (default: the file's `encoder_prefix`, else the best match of \"\", state_dict., model., module., ...); "
                   + "loading is strict, except that `weights_skip_head: true` keeps a fresh classification head; a position table of another "
                   + "size is resampled bicubically. The other keys depend on the kind.")
        out.append("")
        func encoder<S: EncoderSettings>(_ kind: S.Type) {
            let defaults = kind.init()
            table("`encoder.kind: \(kind.kind)`", "— \(kind.summary)\(kind.isPatchTokenEncoder ? " (a PatchTokenEncoder)" : ""). Hidden layers: \(defaults.hiddenLayerNames.joined(separator: ", ")).",
                  kind.fields, defaults)
        }
        for kind in EncoderRegistry.kinds { encoder(kind) }

        out.append("**Stages**: \(StageRegistry.kinds.map { "`\($0.kind)`" }.joined(separator: ", ")); each entry is `- KIND: {keys}`.")
        out.append("")
        func stage<S: Stage>(_ kind: S.Type) {
            // The training keys of the training stages are one table below, with each one's defaults.
            let trains = Set(TrainingSettings.keys).isSubset(of: kind.fields.map(\.key))
            table("`\(kind.kind)`", "— \(kind.summary)\(trains ? "; and the training keys below" : "").",
                  kind.fields.filter { !trains || !TrainingSettings.keys.contains($0.key) }, kind.init())
        }
        for kind in StageRegistry.kinds { stage(kind) }
        trainingTable(&out)
        func objective<S: ObjectiveSettings>(_ kind: S.Type) {
            table("`objective.kind: \(kind.kind)`", "— \(kind.summary).", kind.fields, kind.init())
        }
        for kind in ObjectiveRegistry.kinds { objective(kind) }
        augmentTable(&out)
        out.append(end)
        return out.joined(separator: "\n") + "\n"
    }

    /// The training keys with each training stage's and each objective's defaults.
    static func trainingTable(_ out: inout [String]) {
        let columns: [(String, TrainingSettings)] = [("supervised", SupervisedStage().settings.training), ("finetune", FinetuneStage().settings.training)]
            + ObjectiveRegistry.kinds.map { ("pretrain: \($0.kind)", $0.trainingDefaults) }
        columnsTable(&out, "**Training keys** of `pretrain`, `supervised` and `finetune`, with each one's defaults (a pretrain stage's are its objective's):",
                     TrainingSettings.fields, columns)
    }

    /// `augment` with the defaults of each objective that has one.
    static func augmentTable(_ out: inout [String]) {
        columnsTable(&out, "**`augment`** (inside a byol, dino or esvit objective): the views, made on the loader's thread as torchvision's transforms make them.",
                     AugmentSection.fields, [("byol", BYOLSettings().augment), ("dino, esvit", DINOSettings().augment),
                                             ("dino mode vit-pytorch", DINOSettings.vitPytorchAugment)])
    }

    /// A section's keys with one column of defaults per (name, defaults).
    static func columnsTable<S>(_ out: inout [String], _ title: String, _ fields: [Field<S>], _ columns: [(String, S)]) {
        out.append(title)
        out.append("")
        out.append("| key | " + columns.map(\.0).joined(separator: " | ") + " | meaning |")
        out.append("|---|" + String(repeating: "---|", count: columns.count + 1))
        for f in fields {
            out.append("| `\(f.key)` | " + columns.map { defaultCell(f.write($0.1)) }.joined(separator: " | ") + " | \(cell(f.help)) |")
        }
        out.append("")
    }

    static func defaultCell(_ value: any Encodable) -> String {
        if value is any RecipeSection || value is EncoderSection { return "(below)" }
        if let stages = value as? [StageEntry] { return stages.isEmpty ? "—" : "" }
        if let text = value as? String, text.isEmpty { return "—" }
        return "`" + yamlScalarText(value) + "`"
    }

    static func cell(_ text: String) -> String { text.replacingOccurrences(of: "|", with: "\\|") }
}
