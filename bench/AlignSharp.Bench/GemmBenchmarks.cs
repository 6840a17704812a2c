using AlignSharp.Engine.Kernels;
using BenchmarkDotNet.Attributes;

namespace AlignSharp.Bench;

/// <summary>
/// Float32 GEMM on square and transformer shapes (all threads):
/// `dotnet run -c Release --project bench/AlignSharp.Bench -- --filter '*GemmBenchmarks*'`.
/// For GFLOP/s next to PyTorch use `alignsharp bench gemm` (see docs/performance.md).
/// </summary>
[MemoryDiagnoser]
public class GemmBenchmarks
{
    /// <summary>M×K×N, 'T' suffix = A used transposed (weight gradient dW = dYᵀ·X), 'bN' = batched.</summary>
    [Params("256x256x256", "1024x1024x1024", "2048x256x768", "1024x768x3072", "3072x1024x768T", "256x64x256b48", "1x768x3072")]
    public string Shape { get; set; } = "";

    private int _m, _n, _k, _batch;
    private bool _transA;
    private float[] _a = [], _b = [], _c = [];

    [GlobalSetup]
    public void Setup()
    {
        string s = Shape;
        _transA = s.EndsWith('T');
        s = s.TrimEnd('T');
        _batch = 1;
        int bi = s.IndexOf('b');
        if (bi >= 0) { _batch = int.Parse(s[(bi + 1)..]); s = s[..bi]; }
        var dims = s.Split('x').Select(int.Parse).ToArray();
        (_m, _k, _n) = (dims[0], dims[1], dims[2]);
        var rng = new Random(1);
        _a = Enumerable.Range(0, _batch * _m * _k).Select(_ => (float)rng.NextDouble() - 0.5f).ToArray();
        _b = Enumerable.Range(0, _batch * _k * _n).Select(_ => (float)rng.NextDouble() - 0.5f).ToArray();
        _c = new float[_batch * _m * _n];
    }

    [Benchmark]
    public void Multiply()
    {
        if (_batch == 1)
            Gemm.Multiply(_transA, false, _m, _n, _k, _a, _transA ? _m : _k, _b, _n, _c, _n, accumulate: false);
        else
            Gemm.MultiplyBatched(_batch, _transA, false, _m, _n, _k, _a, _transA ? _m : _k, (long)_m * _k, _b, _n, (long)_k * _n,
                _c, _n, (long)_m * _n, accumulate: false);
    }
}
