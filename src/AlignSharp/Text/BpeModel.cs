using System.Buffers;
using System.Runtime.CompilerServices;
using System.Text;

namespace AlignSharp.Text;

/// <summary>
/// A tokenizer.json BPE model, in one of two symbol alphabets:
/// <list type="bullet">
/// <item><b>Byte-level</b> (GPT-2, Llama 3, Qwen): a piece's UTF-8 bytes start as one symbol each (the vocabulary id
/// of the byte's <see cref="ByteLevelAlphabet"/> character).</item>
/// <item><b>Character-level</b> (SentencePiece-style: Llama 2, Mistral, Gemma): each code point starts as its own
/// vocabulary id; a code point missing from the vocabulary becomes its UTF-8 bytes as <c>&lt;0xNN&gt;</c> tokens when
/// <c>byte_fallback</c> is set and all of them exist, else <c>unk_token</c> (consecutive unknowns fused into one with
/// <c>fuse_unk</c>), else it is dropped, as Hugging Face tokenizers' BPE does.</item>
/// </list>
/// Then the adjacent pair with the lowest merge rank is merged (leftmost on ties) until no pair has a merge. Results
/// are cached per piece.
/// <para>Hot path (cache miss): symbols and pair ranks live on the stack; each adjacent pair is looked up in
/// <see cref="MergeTable"/> once, when it forms (<see cref="MergeByRankScan"/>), not on every pass as in the reference
/// <see cref="MergeByScan"/>. Long pieces (a whole Gemma paragraph is one piece) use the O(n log n)
/// <see cref="MergeWithHeap"/>.</para>
/// <para>Thread safety: immutable apart from the cache, an array of immutable entries written and read atomically;
/// one instance may be shared by any number of threads.</para>
/// </summary>
internal sealed class BpeModel
{
    /// <summary>Pieces with more symbols than this use the heap-based merge loop instead of the quadratic scan.</summary>
    internal const int HeapThreshold = 48;
    const int MaxCachedPieceLength = 128;
    /// <summary>The cache is direct-mapped: 2^18 slots (2 MB of references), a piece replaces whatever held its slot.</summary>
    const int CacheSlotBits = 18;
    /// <summary>Pieces of up to this many UTF-8 bytes are encoded with stack buffers only.</summary>
    const int StackBytes = 512;

    readonly Dictionary<string, int> _vocab;
    readonly Dictionary<string, int>.AlternateLookup<ReadOnlySpan<char>> _vocabLookup;
    readonly MergeTable _merges;
    readonly int[] _byteIds; // -1 when the byte's character is not in the vocabulary (the byte is dropped, as HF does)
    readonly bool _ignoreMerges;
    readonly BpeAlphabet _alphabet;
    // Character-level only: ids of single UTF-16 code units (-1: not a token), the <0xNN> ids (-1: missing), unk.
    readonly int[] _charIds = [];
    readonly int[] _fallbackIds = [];
    readonly bool _byteFallback;
    readonly int _unkId = -1;
    readonly bool _fuseUnk;
    readonly WordBoundaries? _wordBoundaries;
    readonly CacheEntry?[] _cache = new CacheEntry?[1 << CacheSlotBits];

    sealed class CacheEntry(string piece, int[] ids)
    {
        public readonly string Piece = piece;
        public readonly int[] Ids = ids;
    }

    /// <summary>A byte-level BPE model (GPT-2 style).</summary>
    public BpeModel(Dictionary<string, int> vocab, IReadOnlyList<(string Left, string Right)> merges, bool ignoreMerges, string source)
        : this(vocab, merges, new BpeOptions(BpeAlphabet.ByteLevel, ignoreMerges, false, null, false), source) { }

    public BpeModel(Dictionary<string, int> vocab, IReadOnlyList<(string Left, string Right)> merges, BpeOptions options, string source)
    {
        _vocab = vocab;
        _vocabLookup = vocab.GetAlternateLookup<ReadOnlySpan<char>>(); // the vocabulary is keyed with StringComparer.Ordinal
        _ignoreMerges = options.IgnoreMerges;
        _alphabet = options.Alphabet;
        _byteIds = new int[256];
        for (int b = 0; b < 256; b++)
            _byteIds[b] = vocab.TryGetValue(ByteLevelAlphabet.ByteToChar[b].ToString(), out int id) ? id : -1;
        if (_alphabet == BpeAlphabet.Character)
        {
            _charIds = new int[char.MaxValue + 1];
            Array.Fill(_charIds, -1);
            foreach (var (token, id) in vocab)
                if (token.Length == 1 && !char.IsSurrogate(token[0])) _charIds[token[0]] = id;
            _byteFallback = options.ByteFallback;
            _fallbackIds = new int[256];
            for (int b = 0; b < 256; b++) _fallbackIds[b] = vocab.TryGetValue($"<0x{b:X2}>", out int id) ? id : -1;
            if (options.UnkToken is not null && !vocab.TryGetValue(options.UnkToken, out _unkId))
                throw new UserInputException($"{source}: model.unk_token '{options.UnkToken}' is not in model.vocab");
            _fuseUnk = options.FuseUnk;
        }
        _merges = new MergeTable(merges.Count);
        for (int rank = 0; rank < merges.Count; rank++)
        {
            var (left, right) = merges[rank];
            if (!vocab.TryGetValue(left, out int a) || !vocab.TryGetValue(right, out int b) || !vocab.TryGetValue(left + right, out int ab))
                throw new UserInputException($"{source}: merge {rank} (\"{left} {right}\") uses a token missing from model.vocab");
            _merges.TryAdd(a, b, rank, ab); // a repeated pair keeps its first (lowest) rank
        }
        if (_alphabet == BpeAlphabet.Character && !_ignoreMerges) _wordBoundaries = WordBoundaries.Find(vocab, merges, options.UnkToken);
    }

    /// <summary>
    /// Where a SentencePiece-style word may be cut without changing its BPE result. Without a pre-tokenizer split
    /// (Llama 2) or with one that never matches (Gemma) a whole paragraph is one word, too long for the piece cache;
    /// cut before each "▁" that follows another character, it becomes cacheable words. A cut between code point c
    /// and "▁" is exact when no merge joins a left token ending in c to a right token starting with "▁": then no
    /// symbol ever spans the cut, and BPE on the parts does the same merges as on the whole. Llama 2 has no such
    /// merge; Gemma 3 has one (">" + "▁&lt;/"), so there a "▁" after ">" is not a cut.
    /// </summary>
    sealed class WordBoundaries
    {
        const char Meta = '\u2581';
        readonly HashSet<int> _joinedToMeta = [];

        /// <summary>
        /// Null when cutting is not provably exact: "▁" is not a token (it could fuse with a neighbouring unknown),
        /// or a merge involves byte-fallback or unk tokens. (With ignore_merges a whole-word lookup could span a cut:
        /// the caller does not cut then.)
        /// </summary>
        public static WordBoundaries? Find(Dictionary<string, int> vocab, IReadOnlyList<(string Left, string Right)> merges, string? unk)
        {
            if (!vocab.ContainsKey(Meta.ToString())) return null;
            var b = new WordBoundaries();
            foreach (var (left, right) in merges)
            {
                if (left.Length == 0 || right.Length == 0) continue;
                if (IsSpecialSymbol(left, unk) || IsSpecialSymbol(right, unk)) return null;
                if (right[0] == Meta && left[^1] != Meta) b._joinedToMeta.Add(LastCodePoint(left));
            }
            return b;
        }

        static bool IsSpecialSymbol(string token, string? unk) =>
            token == unk || (token.Length == 6 && token.StartsWith("<0x", StringComparison.Ordinal) && token[5] == '>');

        static int LastCodePoint(ReadOnlySpan<char> s) =>
            s.Length >= 2 && char.IsSurrogatePair(s[^2], s[^1]) ? char.ConvertToUtf32(s[^2], s[^1]) : s[^1];

        /// <summary>The length of the first word of <paramref name="piece"/> (all of it when there is no cut).</summary>
        public int FirstWordLength(ReadOnlySpan<char> piece)
        {
            for (int i = 1; i < piece.Length; i++)
            {
                i += piece[i..].IndexOf(Meta) is var k && k >= 0 ? k : piece.Length;
                if (i >= piece.Length) break;
                char prev = piece[i - 1];
                if (prev != Meta && !_joinedToMeta.Contains(LastCodePoint(piece[..i]))) return i;
            }
            return piece.Length;
        }
    }

    public IReadOnlyDictionary<string, int> Vocab => _vocab;

    /// <summary>Appends the ids of one pre-tokenized piece.</summary>
    public void Encode(ReadOnlySpan<char> piece, List<int> output)
    {
        if (_wordBoundaries is not null)
        {
            while (piece.Length > 0)
            {
                int n = _wordBoundaries.FirstWordLength(piece);
                EncodeWord(piece[..n], output);
                piece = piece[n..];
            }
            return;
        }
        EncodeWord(piece, output);
    }

    void EncodeWord(ReadOnlySpan<char> piece, List<int> output)
    {
        if (piece.Length > MaxCachedPieceLength)
        {
            CollectionExtensions.AddRange(output, EncodeUncached(piece));
            return;
        }
        ref CacheEntry? slot = ref _cache[string.GetHashCode(piece) & ((1 << CacheSlotBits) - 1)];
        var entry = Volatile.Read(ref slot);
        if (entry is null || !piece.SequenceEqual(entry.Piece))
        {
            entry = new CacheEntry(piece.ToString(), EncodeUncached(piece));
            Volatile.Write(ref slot, entry);
        }
        CollectionExtensions.AddRange(output, entry.Ids);
    }

    int[] EncodeUncached(ReadOnlySpan<char> piece) =>
        _alphabet == BpeAlphabet.ByteLevel ? EncodeBytes(piece) : EncodeCharacters(piece);

    [SkipLocalsInit]
    int[] EncodeBytes(ReadOnlySpan<char> piece)
    {
        int maxBytes = Encoding.UTF8.GetMaxByteCount(piece.Length);
        byte[]? rentedBytes = null;
        Span<byte> bytes = maxBytes <= StackBytes ? stackalloc byte[StackBytes] : (rentedBytes = ArrayPool<byte>.Shared.Rent(maxBytes));
        try
        {
            int n = Encoding.UTF8.GetBytes(piece, bytes);
            bytes = bytes[..n];
            if (_ignoreMerges)
            {
                Span<char> chars = n <= StackBytes ? stackalloc char[StackBytes] : new char[n];
                for (int i = 0; i < n; i++) chars[i] = ByteLevelAlphabet.ByteToChar[bytes[i]];
                if (_vocabLookup.TryGetValue(chars[..n], out int whole)) return [whole];
            }
            if (n > HeapThreshold)
            {
                var symbols = new int[n];
                int count = 0;
                foreach (byte b in bytes)
                    if (_byteIds[b] >= 0) symbols[count++] = _byteIds[b];
                return symbols.AsSpan(0, MergeWithHeap(symbols, count)).ToArray();
            }
            else
            {
                Span<int> symbols = stackalloc int[HeapThreshold];
                Span<int> scratch = stackalloc int[2 * HeapThreshold];
                int count = 0;
                foreach (byte b in bytes)
                    if (_byteIds[b] >= 0) symbols[count++] = _byteIds[b];
                return symbols[..MergeByRankScan(symbols[..count], scratch)].ToArray();
            }
        }
        finally
        {
            if (rentedBytes is not null) ArrayPool<byte>.Shared.Return(rentedBytes);
        }
    }

    /// <summary>Character-level symbols (code points, byte fallback, unk), then the merge loop.</summary>
    [SkipLocalsInit]
    int[] EncodeCharacters(ReadOnlySpan<char> piece)
    {
        if (_ignoreMerges && _vocabLookup.TryGetValue(piece, out int whole)) return [whole];
        // A UTF-16 code unit falls back to at most 3 byte tokens, a surrogate pair (two units) to 4.
        int maxSymbols = 3 * piece.Length;
        Span<int> symbols = maxSymbols <= StackBytes ? stackalloc int[StackBytes] : new int[maxSymbols];
        int count = 0;
        bool previousUnk = false;
        Span<byte> utf8 = stackalloc byte[4];
        for (int i = 0; i < piece.Length;)
        {
            int width = char.IsHighSurrogate(piece[i]) && i + 1 < piece.Length && char.IsLowSurrogate(piece[i + 1]) ? 2 : 1;
            var unit = piece.Slice(i, width);
            i += width;
            int id = width == 1 ? _charIds[unit[0]] : _vocabLookup.TryGetValue(unit, out int v) ? v : -1;
            if (id >= 0)
            {
                symbols[count++] = id;
                previousUnk = false;
                continue;
            }
            if (_byteFallback && TryAppendFallback(unit, utf8, symbols, ref count))
            {
                previousUnk = false;
                continue;
            }
            if (_unkId < 0) continue; // no unk_token: the character is dropped, as tokenizers does
            if (!(_fuseUnk && previousUnk)) symbols[count++] = _unkId;
            previousUnk = true;
        }
        symbols = symbols[..count];
        if (count > HeapThreshold)
        {
            var array = symbols.ToArray();
            return array.AsSpan(0, MergeWithHeap(array, count)).ToArray();
        }
        Span<int> scratch = stackalloc int[2 * HeapThreshold];
        return symbols[..MergeByRankScan(symbols, scratch[..(2 * count)])].ToArray();
    }

    /// <summary>Appends the &lt;0xNN&gt; ids of one character's UTF-8 bytes, or nothing (false) if one is missing.</summary>
    bool TryAppendFallback(ReadOnlySpan<char> unit, Span<byte> utf8, Span<int> symbols, ref int count)
    {
        // A lone surrogate has no UTF-8 form; like Rust's String (which cannot hold one) we encode U+FFFD instead.
        int n = Encoding.UTF8.GetBytes(unit, utf8);
        for (int k = 0; k < n; k++)
            if (_fallbackIds[utf8[k]] < 0) return false;
        for (int k = 0; k < n; k++) symbols[count++] = _fallbackIds[utf8[k]];
        return true;
    }

    /// <summary>Reference merge loop: scan all pairs for the lowest rank, merge it, repeat. O(n²) lookups.</summary>
    internal int MergeByScan(int[] symbols, int count)
    {
        while (count > 1)
        {
            int bestRank = int.MaxValue, bestAt = -1, bestId = 0;
            for (int i = 0; i + 1 < count; i++)
            {
                int rank = _merges.Find(symbols[i], symbols[i + 1], out int newId);
                if (rank < bestRank)
                {
                    bestRank = rank;
                    bestAt = i;
                    bestId = newId;
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
    /// Same result as <see cref="MergeByScan"/> with O(n) table lookups: ranks[i] / merged[i] hold the rank and
    /// merged id of pair (i, i+1) and only the two pairs touching a merge are looked up again. Each pass is a linear
    /// scan for the first minimum rank over a small int array. <paramref name="scratch"/> needs 2 × symbols.Length.
    /// Returns the new symbol count; the symbols are compacted to the front of <paramref name="symbols"/>.
    /// </summary>
    internal int MergeByRankScan(Span<int> symbols, Span<int> scratch)
    {
        int count = symbols.Length;
        if (count < 2) return count;
        Span<int> ranks = scratch[..count];
        Span<int> merged = scratch.Slice(count, count);
        for (int i = 0; i + 1 < count; i++) ranks[i] = _merges.Find(symbols[i], symbols[i + 1], out merged[i]);
        while (count > 1)
        {
            int best = 0, bestRank = ranks[0];
            for (int i = 1; i + 1 < count; i++)
                if (ranks[i] < bestRank) { bestRank = ranks[i]; best = i; }
            if (bestRank == MergeTable.NoMerge) break;
            symbols[best] = merged[best];
            // Drop symbol best+1 and pair (best+1, best+2); later pairs move down by one.
            for (int k = best + 1; k + 1 < count; k++)
            {
                symbols[k] = symbols[k + 1];
                ranks[k] = ranks[k + 1];
                merged[k] = merged[k + 1];
            }
            count--;
            if (best + 1 < count) ranks[best] = _merges.Find(symbols[best], symbols[best + 1], out merged[best]);
            if (best > 0) ranks[best - 1] = _merges.Find(symbols[best - 1], symbols[best], out merged[best - 1]);
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
            if (nx < 0) return;
            int rank = _merges.Find(symbols[pos], symbols[nx], out int newId);
            if (rank != MergeTable.NoMerge) heap.Enqueue((pos, rank, newId), (rank, pos));
        }
        for (int i = 0; i + 1 < count; i++) Offer(i);
        while (heap.TryDequeue(out var c, out _))
        {
            int nx = next[c.Pos];
            if (!alive[c.Pos] || nx < 0) continue;
            int rank = _merges.Find(symbols[c.Pos], symbols[nx], out int newId);
            if (rank != c.Rank) continue;
            symbols[c.Pos] = newId;
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

/// <summary>Which symbols a BPE word starts from: UTF-8 bytes (GPT-2's byte-level alphabet) or code points (SentencePiece).</summary>
internal enum BpeAlphabet { ByteLevel, Character }

/// <summary>
/// tokenizer.json BPE model settings beyond vocab and merges. <see cref="ByteFallback"/>, <see cref="UnkToken"/> and
/// <see cref="FuseUnk"/> apply to the character alphabet only (a byte-level alphabet has no unknown characters).
/// </summary>
internal sealed record BpeOptions(BpeAlphabet Alphabet, bool IgnoreMerges, bool ByteFallback, string? UnkToken, bool FuseUnk);

/// <summary>
/// BPE merge ranks: an open-addressing hash table from an adjacent pair of symbol ids to (rank, merged id), with
/// linear probing at a load factor of at most 1/2. A slot is 16 bytes, so a lookup usually touches one cache line.
/// </summary>
internal sealed class MergeTable
{
    /// <summary>The rank <see cref="Find"/> returns for a pair without a merge; above every real rank.</summary>
    public const int NoMerge = int.MaxValue;
    const long Empty = -1; // pair keys are non-negative: both ids are

    struct Slot
    {
        public long Key;
        public int Rank;
        public int NewId;
    }

    readonly Slot[] _slots;
    readonly int _shift;
    readonly int _mask;

    public MergeTable(int capacity)
    {
        int bits = 4;
        while ((1 << bits) < 2 * (long)capacity) bits++;
        _slots = new Slot[1 << bits];
        _slots.AsSpan().Fill(new Slot { Key = Empty });
        _shift = 64 - bits;
        _mask = (1 << bits) - 1;
    }

    static long Key(int a, int b) => ((long)a << 32) | (uint)b;

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    int Home(long key) => (int)((ulong)key * 0x9E3779B97F4A7C15UL >> _shift); // Fibonacci hashing

    /// <summary>Adds the merge of (a, b) unless the pair already has one.</summary>
    public bool TryAdd(int a, int b, int rank, int newId)
    {
        long key = Key(a, b);
        for (int i = Home(key); ; i = (i + 1) & _mask)
        {
            ref Slot s = ref _slots[i];
            if (s.Key == key) return false;
            if (s.Key == Empty)
            {
                s = new Slot { Key = key, Rank = rank, NewId = newId };
                return true;
            }
        }
    }

    /// <summary>The rank of merging (a, b) and the merged id, or <see cref="NoMerge"/> when the pair has no merge.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public int Find(int a, int b, out int newId)
    {
        long key = Key(a, b);
        Slot[] slots = _slots;
        for (int i = Home(key); ; i = (i + 1) & _mask)
        {
            ref Slot s = ref slots[i];
            if (s.Key == key)
            {
                newId = s.NewId;
                return s.Rank;
            }
            if (s.Key == Empty)
            {
                newId = 0;
                return NoMerge;
            }
        }
    }
}
