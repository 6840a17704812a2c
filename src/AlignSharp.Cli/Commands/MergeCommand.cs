using System.CommandLine;
using AlignSharp.Models;
using AlignSharp.Models.Checkpoints;
using AlignSharp.Models.Lora;
using AlignSharp.Text;

namespace AlignSharp.Cli.Commands;

/// <summary>
/// `alignsharp merge --model BASE --adapter DIR --out DIR`: the base model with a PEFT LoRA adapter merged into its
/// weights (W + scale·B·A), written in Hugging Face layout with the tokenizer files (the adapter directory's when it has
/// them, as a LoRA run's final/ does, else the base's).
/// </summary>
public static class MergeCommand
{
    public static Command Create()
    {
        var model = new Option<string>("--model") { Description = "Base model directory the adapter was trained on.", Required = true };
        var adapter = new Option<string>("--adapter") { Description = "LoRA adapter directory (PEFT: adapter_config.json + adapter_model.safetensors).", Required = true };
        var output = new Option<string>("--out") { Description = "Directory to write the merged model to (new or empty).", Required = true };
        var dtype = new Option<string>("--save-dtype") { Description = "Storage dtype of the merged weights: f32 or bf16.", DefaultValueFactory = _ => "f32" };
        var cmd = new Command("merge", "Merge a LoRA adapter into its base model.") { model, adapter, output, dtype };
        cmd.SetAction(r => CliErrors.Guard(() =>
        {
            string baseDir = r.GetValue(model)!, adapterDir = r.GetValue(adapter)!, outDir = r.GetValue(output)!;
            var storage = r.GetValue(dtype) switch
            {
                "f32" => SafetensorsDtype.F32,
                "bf16" => SafetensorsDtype.BF16,
                var d => throw new UserInputException($"--save-dtype must be f32 or bf16, not '{d}'."),
            };
            if (!Directory.Exists(baseDir)) throw new UserInputException($"--model: directory '{baseDir}' does not exist");
            if (!Directory.Exists(adapterDir)) throw new UserInputException($"--adapter: directory '{adapterDir}' does not exist");
            if (Directory.Exists(outDir) && Directory.EnumerateFileSystemEntries(outDir).Any())
                throw new UserInputException($"--out: '{outDir}' is not empty; give a new directory.");
            // A SEQ_CLS adapter (rm --lora-r) carries its score head: the base is loaded as a reward model for it. A base
            // that is itself an adapter directory (a LoRA run's final/) is that run's model, its adapter merged.
            bool seqCls = LoraConfig.Load(adapterDir).TaskType == LoraConfig.SequenceClassification;
            var merged = ModelIO.LoadMerged(baseDir, seqCls ? HeadKind.Scalar : null);
            if (TrainedOn(adapterDir) is { } trainedOn && OutputPaths.Full(trainedOn) != OutputPaths.Full(baseDir))
                Console.Error.WriteLine($"merge: note: {adapterDir} names {trainedOn} as its base (base_model_name_or_path), not --model {baseDir}");
            var lora = LoraAdapter.Load(adapterDir, merged);
            lora.MergeInto(merged);
            Pretrained.SaveModel(merged, outDir, storage, File.Exists(Path.Combine(adapterDir, "tokenizer.json")) ? adapterDir : baseDir);
            // A reward model's formatting and normalisation travel with it.
            string info = Path.Combine(adapterDir, AlignSharp.Training.Rewards.RewardModelInfo.FileName);
            if (seqCls && File.Exists(info)) File.Copy(info, Path.Combine(outDir, AlignSharp.Training.Rewards.RewardModelInfo.FileName));
            Console.Error.WriteLine($"merge: {lora.Modules.Count} adapted modules (r {lora.Config.R}) merged into {baseDir} → {outDir}");
            return 0;
        }));
        return cmd;
    }

    /// <summary>The base an adapter names (base_model_name_or_path) where that directory exists, else null.</summary>
    private static string? TrainedOn(string adapterDir)
    {
        try { return ModelIO.AdapterBase(adapterDir); }
        catch (UserInputException) { return null; }
    }
}
