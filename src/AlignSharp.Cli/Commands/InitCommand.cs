using System.CommandLine;
using AlignSharp.Models;
using AlignSharp.Models.Checkpoints;
using AlignSharp.Text;

namespace AlignSharp.Cli.Commands;

/// <summary>`alignsharp init`: a randomly initialised model written in Hugging Face layout.</summary>
public static class InitCommand
{
    public static Command Create()
    {
        var arch = new Option<string>("--arch") { Description = "gpt2 (LayerNorm, learned positions, GELU, tied head) or llama (RMSNorm, RoPE, SwiGLU, GQA).", Required = true };
        arch.AcceptOnlyFromAmong("gpt2", "llama");
        var vocab = new Option<int>("--vocab-size") { Description = "Vocabulary size (at least the tokenizer's).", Required = true };
        var dModel = new Option<int>("--d-model") { Description = "Hidden size.", Required = true };
        var layers = new Option<int>("--layers") { Description = "Transformer blocks.", Required = true };
        var heads = new Option<int>("--heads") { Description = "Attention heads (must divide --d-model).", Required = true };
        var kvHeads = new Option<int?>("--kv-heads") { Description = "Key/value heads for grouped-query attention (llama; default: --heads)." };
        var maxPositions = new Option<int>("--max-positions") { Description = "Longest sequence (gpt2: learned positions).", DefaultValueFactory = _ => 1024 };
        var tokenizer = new Option<string?>("--tokenizer") { Description = "'byte' or a tokenizer.json / model directory to copy next to the model (default: none)." };
        var seed = new Option<int>("--seed") { Description = "Seed of the random weights.", DefaultValueFactory = _ => 0 };
        var dtype = new Option<string>("--dtype") { Description = "Storage dtype: f32 or bf16.", DefaultValueFactory = _ => "f32" };
        dtype.AcceptOnlyFromAmong("f32", "bf16");
        var output = new Option<string>("--out") { Description = "Directory to write (config.json, model.safetensors, tokenizer files).", Required = true };
        var cmd = new Command("init", "Write a randomly initialised model in Hugging Face layout.")
        {
            arch, vocab, dModel, layers, heads, kvHeads, maxPositions, tokenizer, seed, dtype, output,
        };
        cmd.SetAction(r => CliErrors.Guard(() =>
        {
            int d = r.GetValue(dModel), h = r.GetValue(heads), kv = r.GetValue(kvHeads) ?? h, v = r.GetValue(vocab), l = r.GetValue(layers);
            if (d <= 0 || h <= 0 || l <= 0 || v <= 0) throw new CliException("--vocab-size, --d-model, --layers and --heads must be positive");
            if (d % h != 0) throw new CliException($"--heads {h} must divide --d-model {d}");
            if (kv <= 0 || h % kv != 0) throw new CliException($"--kv-heads {kv} must divide --heads {h}");
            bool gpt2 = r.GetValue(arch) == "gpt2";
            if (gpt2 && kv != h) throw new CliException("gpt2 has no grouped-query attention: leave out --kv-heads or use --arch llama");
            // A new model never lands on an old one (a trained model's weights, its chat template left beside new ones).
            string outDir = r.GetValue(output)!;
            if (File.Exists(outDir)) throw new CliException($"--out: '{outDir}' is a file; give a new directory.");
            if (Directory.Exists(outDir) && Directory.EnumerateFileSystemEntries(outDir).Any())
                throw new CliException($"--out: '{outDir}' is not empty; give a new directory.");

            ITokenizer? tok = null;
            string? tokArg = r.GetValue(tokenizer);
            if (tokArg != null) tok = Tokenizers.Load(tokArg);
            if (tok != null && tok.VocabSize > v) throw new CliException($"--vocab-size {v} is smaller than the tokenizer's {tok.VocabSize} tokens");

            var config = gpt2
                ? ModelPresets.Gpt2(v, d, l, h, r.GetValue(maxPositions))
                : ModelPresets.Llama(v, d, l, h, kv, maxPositions: r.GetValue(maxPositions));
            config = config with
            {
                BosTokenId = tok?.BosId,
                EosTokenIds = tok?.EosId is int e ? [e] : [],
                PadTokenId = tok?.PadId,
            };
            var model = TransformerModel.CreateRandom(config, r.GetValue(seed));
            ModelIO.Save(model, outDir, r.GetValue(dtype) == "bf16" ? SafetensorsDtype.BF16 : SafetensorsDtype.F32);
            if (tokArg == "byte")
            {
                Models.Checkpoints.AtomicFile.WriteText(Path.Combine(outDir, "tokenizer.json"), ByteTokenizerJson.TokenizerJson());
                Models.Checkpoints.AtomicFile.WriteText(Path.Combine(outDir, "tokenizer_config.json"), ByteTokenizerJson.TokenizerConfigJson());
            }
            else if (tokArg != null)
            {
                string from = Directory.Exists(tokArg) ? tokArg : Path.GetDirectoryName(Path.GetFullPath(tokArg))!;
                if (Directory.Exists(tokArg)) Pretrained.CopyTokenizerFiles(from, outDir);
                else
                {
                    File.Copy(tokArg, Path.Combine(outDir, "tokenizer.json"), overwrite: true);
                    var cfg = Path.Combine(from, "tokenizer_config.json");
                    if (File.Exists(cfg)) File.Copy(cfg, Path.Combine(outDir, "tokenizer_config.json"), overwrite: true);
                }
            }
            Console.Error.WriteLine($"init: {config.Family} model, {model.ParameterCount:N0} parameters -> {outDir}");
            return 0;
        }));
        return cmd;
    }
}
