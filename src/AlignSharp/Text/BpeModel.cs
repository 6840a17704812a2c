using System.Buffers;
using System.Collections.Concurrent;
using System.Text;

namespace AlignSharp.Text;

/// <summary>
/// Byte-level BPE: a piece's UTF-8 bytes start as one symbol each (the vocabulary id of the byte's
/// <see cref="ByteLevelAlphabet"/> character); the adjacent pair with the lowest merge rank is merged (leftmost on
/// ties) until no pair has a merge. Results are cached per piece.
/// <para>Thread safety: immutable apart from the cache, a <see cref="ConcurrentDictionary{TKey,TValue}"/>; one
/// instance may be shared by any number of threads.</para>
/// </summary>
internal sealed class BpeModel
{
    /// <summary>Pieces with more symbols than this use the heap-based merge loop instead of the quadratic scan.</summary>
    internal const int HeapThreshold = 48;
    const int MaxCachedPieceLength = 128;
    const int MaxCacheEntries = 1 << 18;

    readonly Dictionary<string, int> _vocab;
    readonly Dictionary<long, Merge> _merges;
    readonly int[] _byteIds; // -1 when the byte's character is not in the vocabulary (the byte is dropped, as HF does)
    readonly bool _ignoreMerges;
    readonly ConcurrentDictionary<string, int[]> _cache = new(StringComparer.Ordinal);
    readonly ConcurrentDictionary<string, int[]>.AlternateLookup<ReadOnlySpan<char>> _cacheLookup;
    int _cacheCount;

    internal readonly record struct Merge(int Rank, int NewId);

    public BpeModel(Dictionary<string, int> vocab, IReadOnlyList<(string Left, string Right)> merges, bool ignoreMerges, string source)
    {
        _vocab = vocab;
        _ignoreMerges = ignoreMerges;
        _cacheLookup = _cache.GetAlternateLookup<ReadOnlySpan<char>>();
        _byteIds = new int[256];
        for (int b = 0; b < 256; b++)
            _byteIds[b] = vocab.TryGetValue(ByteLevelAlphabet.ByteToChar[b].ToString(), out int id) ? id : -1;
        _merges = new Dictionary<long, Merge>(merges.Count);
        for (int rank = 0; rank < merges.Count; rank++)
        {
            var (left, right) = merges[rank];
            if (!vocab.TryGetValue(left, out int a) || !vocab.TryGetValue(right, out int b) || !vocab.TryGetValue(left + right, out int ab))
                throw new UserInputException($"{source}: merge {rank} (\"{left} {right}\") uses a token missing from model.vocab");
            _merges.TryAdd(PairKey(a, b), new Merge(rank, ab));
        }
    }

    public IReadOnlyDictionary<string, int> Vocab => _vocab;

    static long PairKey(int a, int b) => ((long)a << 32) | (uint)b;

    /// <summary>Appends the ids of one pre-tokenized piece.</summary>
    public void Encode(ReadOnlySpan<char> piece, List<int> output)
    {
        if (piece.Length <= MaxCachedPieceLength && _cacheLookup.TryGetValue(piece, out var cached))
        {
            output.AddRange(cached);
            return;
        }
        int[] ids = EncodeUncached(piece);
        if (piece.Length <= MaxCachedPieceLength)
        {
            if (Interlocked.Increment(ref _cacheCount) > MaxCacheEntries)
            {
                _cache.Clear();
                Interlocked.Exchange(ref _cacheCount, 0);
            }
            _cacheLookup.TryAdd(piece, ids);
        }
        output.AddRange(ids);
    }

    int[] EncodeUncached(ReadOnlySpan<char> piece)
    {
        int maxBytes = Encoding.UTF8.GetMaxByteCount(piece.Length);
        byte[] rented = ArrayPool<byte>.Shared.Rent(maxBytes);
        try
        {
            int n = Encoding.UTF8.GetBytes(piece, rented);
            var bytes = rented.AsSpan(0, n);
            if (_ignoreMerges && _vocab.TryGetValue(ByteLevelAlphabet.Encode(bytes), out int whole))
                return [whole];
            var symbols = new int[n];
            int count = 0;
            foreach (byte b in bytes)
                if (_byteIds[b] >= 0) symbols[count++] = _byteIds[b];
            count = count > HeapThreshold ? MergeWithHeap(symbols, count) : MergeByScan(symbols, count);
            return symbols.AsSpan(0, count).ToArray();
        }
        finally
        {
            ArrayPool<byte>.Shared.Return(rented);
        }
    }

    /// <summary>Reference merge loop: scan all pairs for the lowest rank, merge it, repeat. O(n²); fine for short pieces.</summary>
    internal int MergeByScan(int[] symbols, int count)
    {
        while (count > 1)
        {
            int bestRank = int.MaxValue, bestAt = -1, bestId = 0;
            for (int i = 0; i + 1 < count; i++)
            {
                if (_merges.TryGetValue(PairKey(symbols[i], symbols[i + 1]), out var m) && m.Rank < bestRank)
                {
                    bestRank = m.Rank;
                    bestAt = i;
                    bestId = m.NewId;
                }
            }
            if (bestAt < 0) break;
            symbols[bestAt] = bestId;
            Array.Copy(symbols, bestAt + 2, symbols, bestAt + 1, count - bestAt - 2);
            count--;
        }
        return count;
    }

    /// <summary>
    /// Same result as <see cref="MergeByScan"/> in O(n log n): symbols form a linked list and candidate pairs sit in a
    /// heap ordered by (rank, position); a popped candidate is used only if its pair is still adjacent and unchanged.
    /// </summary>
    internal int MergeWithHeap(int[] symbols, int count)
    {
        var next = new int[count];
        var prev = new int[count];
        var alive = new bool[count];
        for (int i = 0; i < count; i++)
        {
            next[i] = i + 1 < count ? i + 1 : -1;
            prev[i] = i - 1;
            alive[i] = true;
        }
        var heap = new PriorityQueue<(int Pos, int Rank, int NewId), (int Rank, int Pos)>();
        void Offer(int pos)
        {
            int nx = next[pos];
            if (nx >= 0 && _merges.TryGetValue(PairKey(symbols[pos], symbols[nx]), out var m))
                heap.Enqueue((pos, m.Rank, m.NewId), (m.Rank, pos));
        }
        for (int i = 0; i + 1 < count; i++) Offer(i);
        while (heap.TryDequeue(out var c, out _))
        {
            int nx = next[c.Pos];
            if (!alive[c.Pos] || nx < 0) continue;
            if (!_merges.TryGetValue(PairKey(symbols[c.Pos], symbols[nx]), out var m) || m.Rank != c.Rank) continue;
            symbols[c.Pos] = m.NewId;
            alive[nx] = false;
            next[c.Pos] = next[nx];
            if (next[nx] >= 0) prev[next[nx]] = c.Pos;
            if (prev[c.Pos] >= 0) Offer(prev[c.Pos]);
            Offer(c.Pos);
        }
        int w = 0;
        for (int i = 0; i >= 0 && i < count; i = next[i]) symbols[w++] = symbols[i];
        return w;
    }
}
