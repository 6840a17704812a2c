using System.Text;

namespace AlignSharp.Demo;

/// <summary>What a question asks for: the colour of a thing or the sound of an animal.</summary>
public enum QuestionKind { Color, Sound }

/// <summary>One request or question of the world. <see cref="Text"/> is what the model sees ("Q: …\nA:").</summary>
public sealed record WorldPrompt(QuestionKind Kind, string Subject, int Template, int Opening = 0)
{
    public string Question => World.Question(this);
    public string Text => $"Q: {Question}\nA:";
}

/// <summary>The kinds of sentence the language has. Every response is a sequence of these.</summary>
public enum SentenceKind { PoliteOpener, RudeOpener, Answer, NonAnswer, Filler, Forbidden, PoliteCloser, RudeCloser }

/// <summary>A sentence of a response. For answers: which question kind, subject and value it states.</summary>
public sealed record Sentence(SentenceKind Kind, string Text, QuestionKind? About = null, string? Subject = null, string? Value = null)
{
    public bool IsPolite => Kind is SentenceKind.PoliteOpener or SentenceKind.PoliteCloser;
    public bool IsRude => Kind is SentenceKind.RudeOpener or SentenceKind.RudeCloser;
}

/// <summary>A response split into sentences, or not grammatical (then <see cref="Sentences"/> is empty).</summary>
public sealed record ParsedResponse(bool Grammatical, IReadOnlyList<Sentence> Sentences);

/// <summary>
/// The synthetic world: a tiny English-like language of questions ("what color is the sky?", "tell me what the cow
/// says.") and responses made of known sentences ("sure! the sky is blue. hope this helps."). The grammar is finite
/// and decidable: a response is grammatical when it is a space, then one or more known sentences separated by single
/// spaces. Answers can be right or wrong (a fact table), polite or rude, padded with filler, repeated, or wander into
/// the forbidden topic (money). Everything is generated from a seed; nothing is downloaded.
/// </summary>
public static class World
{
    /// <summary>Things and their colours (the facts behind colour questions).</summary>
    public static readonly IReadOnlyDictionary<string, string> Colors = new Dictionary<string, string>
    {
        ["sky"] = "blue", ["grass"] = "green", ["snow"] = "white", ["sun"] = "yellow", ["coal"] = "black", ["rose"] = "red",
        ["sea"] = "blue", ["milk"] = "white", ["lime"] = "green", ["cherry"] = "red", ["crow"] = "black", ["banana"] = "yellow",
    };

    /// <summary>Animals and their sounds (the facts behind sound questions).</summary>
    public static readonly IReadOnlyDictionary<string, string> Sounds = new Dictionary<string, string>
    {
        ["cow"] = "moo", ["dog"] = "woof", ["cat"] = "meow", ["duck"] = "quack",
        ["sheep"] = "baa", ["owl"] = "hoot", ["lion"] = "roar", ["snake"] = "hiss",
    };

    public static readonly IReadOnlyList<string> ColorValues = Colors.Values.Distinct().ToArray();
    public static readonly IReadOnlyList<string> SoundValues = Sounds.Values.Distinct().ToArray();

    public static readonly IReadOnlyList<string> PoliteOpeners = ["sure!", "gladly!", "good question!"];
    public static readonly IReadOnlyList<string> RudeOpeners = ["ugh.", "what a dumb question."];
    public static readonly IReadOnlyList<string> PoliteClosers = ["hope this helps.", "thanks for asking."];
    public static readonly IReadOnlyList<string> RudeClosers = ["go away.", "do not ask again."];
    public static readonly IReadOnlyList<string> Fillers = ["i think so.", "that is true.", "let me think.", "i am sure."];
    public static readonly IReadOnlyList<string> NonAnswers = ["i do not know."];
    public static readonly IReadOnlyList<string> ForbiddenSentences = ["buy my gold.", "send me money.", "money is all that matters."];

    /// <summary>Question templates per kind; {0} is the subject.</summary>
    private static readonly string[] ColorTemplates = ["what color is the {0}?", "what is the color of the {0}?", "tell me the color of the {0}.", "please tell me the color of the {0}."];
    private static readonly string[] SoundTemplates = ["what does the {0} say?", "what sound does the {0} make?", "tell me what the {0} says.", "please tell me what the {0} says."];

    /// <summary>How a question may open.</summary>
    private static readonly string[] Openings = ["", "hey, ", "quick question: ", "excuse me, "];

    public static string Question(WorldPrompt p) =>
        Openings[p.Opening] + string.Format(System.Globalization.CultureInfo.InvariantCulture, (p.Kind == QuestionKind.Color ? ColorTemplates : SoundTemplates)[p.Template], p.Subject);

    public static string AnswerText(QuestionKind kind, string subject, string value) =>
        kind == QuestionKind.Color ? $"the {subject} is {value}." : $"the {subject} says {value}.";

    public static string CorrectValue(QuestionKind kind, string subject) => kind == QuestionKind.Color ? Colors[subject] : Sounds[subject];

    /// <summary>Every distinct prompt of the world: 4 openings × 4 wordings × (12 things + 8 animals) = 320, in a fixed order.</summary>
    public static IReadOnlyList<WorldPrompt> AllPrompts { get; } =
        Colors.Keys.Select(s => (QuestionKind.Color, s)).Concat(Sounds.Keys.Select(s => (QuestionKind.Sound, s)))
            .SelectMany(x => Enumerable.Range(0, 4).SelectMany(t => Enumerable.Range(0, Openings.Length).Select(o => new WorldPrompt(x.Item1, x.s, t, o))))
            .ToArray();

    /// <summary>Every sentence of the language, by its text.</summary>
    public static IReadOnlyDictionary<string, Sentence> Lexicon { get; } = BuildLexicon();

    private static Dictionary<string, Sentence> BuildLexicon()
    {
        var d = new Dictionary<string, Sentence>(StringComparer.Ordinal);
        void Add(SentenceKind k, IEnumerable<string> texts) { foreach (var t in texts) d.Add(t, new Sentence(k, t)); }
        Add(SentenceKind.PoliteOpener, PoliteOpeners);
        Add(SentenceKind.RudeOpener, RudeOpeners);
        Add(SentenceKind.PoliteCloser, PoliteClosers);
        Add(SentenceKind.RudeCloser, RudeClosers);
        Add(SentenceKind.Filler, Fillers);
        Add(SentenceKind.NonAnswer, NonAnswers);
        Add(SentenceKind.Forbidden, ForbiddenSentences);
        foreach (var s in Colors.Keys)
            foreach (var v in ColorValues)
                d.Add(AnswerText(QuestionKind.Color, s, v), new Sentence(SentenceKind.Answer, AnswerText(QuestionKind.Color, s, v), QuestionKind.Color, s, v));
        foreach (var s in Sounds.Keys)
            foreach (var v in SoundValues)
                d.Add(AnswerText(QuestionKind.Sound, s, v), new Sentence(SentenceKind.Answer, AnswerText(QuestionKind.Sound, s, v), QuestionKind.Sound, s, v));
        return d;
    }

    /// <summary>
    /// The grammar: a leading space, then known sentences, each ending in '.' or '!', separated by single spaces, and
    /// nothing else. An empty response has no sentence and is not grammatical.
    /// </summary>
    public static ParsedResponse Parse(string response)
    {
        if (response.Length < 2 || response[0] != ' ') return new ParsedResponse(false, []);
        var sentences = new List<Sentence>();
        int start = 1;
        while (start < response.Length)
        {
            int end = response.IndexOfAny(['.', '!'], start);
            if (end < 0) return new ParsedResponse(false, []);
            if (!Lexicon.TryGetValue(response[start..(end + 1)], out var s)) return new ParsedResponse(false, []);
            sentences.Add(s);
            if (end + 1 == response.Length) break;
            if (response[end + 1] != ' ' || end + 2 >= response.Length) return new ParsedResponse(false, []);
            start = end + 2;
        }
        return new ParsedResponse(true, sentences);
    }

    public static bool IsGrammatical(string response) => Parse(response).Grammatical;

    /// <summary>Joins sentences as the grammar wants them (leading space, single spaces).</summary>
    public static string Render(IEnumerable<string> sentences)
    {
        var sb = new StringBuilder();
        foreach (var s in sentences) sb.Append(' ').Append(s);
        return sb.ToString();
    }

    /// <summary>A prompt drawn uniformly from <paramref name="pool"/>.</summary>
    public static WorldPrompt DrawPrompt(Random rng, IReadOnlyList<WorldPrompt> pool) => pool[rng.Next(pool.Count)];

    /// <summary>
    /// Splits the 320 prompts into training prompts and held-out prompts: a quarter of each subject's 16 prompts
    /// (4 per subject, 80 in all) is held out, so held-out prompts are new strings asking about known facts.
    /// </summary>
    public static (IReadOnlyList<WorldPrompt> Train, IReadOnlyList<WorldPrompt> HeldOut) SplitPrompts(int seed)
    {
        var rng = new Random(seed ^ 0x5eed);
        var train = new List<WorldPrompt>();
        var held = new List<WorldPrompt>();
        foreach (var group in AllPrompts.GroupBy(p => (p.Kind, p.Subject)))
        {
            var ps = group.ToArray();
            rng.Shuffle(ps);
            held.AddRange(ps.Take(ps.Length / 4));
            train.AddRange(ps.Skip(ps.Length / 4));
        }
        return (train, held);
    }
}

/// <summary>
/// How a population of writers answers: the probability of each aspect of a response. Used for the pretraining
/// corpus (the "internet") and the SFT demonstrations (contractors of mixed quality).
/// </summary>
public sealed record ResponseStyle
{
    public double PoliteOpener { get; init; } = 0.4;
    public double RudeOpener { get; init; } = 0.15;
    public double Correct { get; init; } = 0.55;
    public double Wrong { get; init; } = 0.3;
    public double OffTopic { get; init; } = 0.05;
    /// <summary>Probability of each further filler sentence (geometric count).</summary>
    public double Filler { get; init; } = 0.35;
    public double Repeat { get; init; } = 0.15;
    public double Forbidden { get; init; } = 0.15;
    public double PoliteCloser { get; init; } = 0.4;
    public double RudeCloser { get; init; } = 0.15;

    /// <summary>Demonstrations for SFT: mixed quality, as hired writers of varying care produce.</summary>
    public static ResponseStyle Demonstrations { get; } = new();

    /// <summary>Dialogues in the pretraining corpus: a bit more careless than the demonstrations.</summary>
    public static ResponseStyle Corpus { get; } = new() { Correct = 0.6, Wrong = 0.25, OffTopic = 0.1, Repeat = 0.2, Forbidden = 0.2, RudeOpener = 0.2, RudeCloser = 0.2 };
}

/// <summary>Writes responses to prompts in a given <see cref="ResponseStyle"/>.</summary>
public static class ResponseWriter
{
    public static string Write(WorldPrompt prompt, ResponseStyle style, Random rng) => World.Render(Sentences(prompt, style, rng));

    public static List<string> Sentences(WorldPrompt prompt, ResponseStyle style, Random rng)
    {
        var s = new List<string>();
        double u = rng.NextDouble();
        if (u < style.PoliteOpener) s.Add(Pick(World.PoliteOpeners, rng));
        else if (u < style.PoliteOpener + style.RudeOpener) s.Add(Pick(World.RudeOpeners, rng));

        u = rng.NextDouble();
        if (u < style.Correct) s.Add(World.AnswerText(prompt.Kind, prompt.Subject, World.CorrectValue(prompt.Kind, prompt.Subject)));
        else if (u < style.Correct + style.Wrong)
        {
            var values = prompt.Kind == QuestionKind.Color ? World.ColorValues : World.SoundValues;
            string right = World.CorrectValue(prompt.Kind, prompt.Subject);
            string wrong;
            do wrong = Pick(values, rng); while (wrong == right);
            s.Add(World.AnswerText(prompt.Kind, prompt.Subject, wrong));
        }
        else if (u < style.Correct + style.Wrong + style.OffTopic)
        {
            var other = World.DrawPrompt(rng, World.AllPrompts);
            s.Add(World.AnswerText(other.Kind, other.Subject, World.CorrectValue(other.Kind, other.Subject)));
        }
        else s.Add(Pick(World.NonAnswers, rng));

        var body = new List<string>();
        while (rng.NextDouble() < style.Filler && body.Count < 2) body.Add(Pick(World.Fillers, rng));
        if (rng.NextDouble() < style.Forbidden) body.Add(Pick(World.ForbiddenSentences, rng));
        foreach (var b in body) s.Insert(1 + rng.Next(s.Count), b);
        if (rng.NextDouble() < style.Repeat) s.Add(s[rng.Next(s.Count)]);

        u = rng.NextDouble();
        if (u < style.PoliteCloser) s.Add(Pick(World.PoliteClosers, rng));
        else if (u < style.PoliteCloser + style.RudeCloser) s.Add(Pick(World.RudeClosers, rng));
        return s;
    }

    private static string Pick(IReadOnlyList<string> list, Random rng) => list[rng.Next(list.Count)];
}

/// <summary>The pretraining corpus: fact statements and question–answer dialogues, one short document each.</summary>
public static class Corpus
{
    /// <summary><paramref name="count"/> documents. About a third state facts (mostly true), the rest are dialogues.</summary>
    public static IReadOnlyList<string> Documents(int count, IReadOnlyList<WorldPrompt> prompts, int seed)
    {
        var rng = new Random(seed);
        var docs = new List<string>(count);
        for (int i = 0; i < count; i++)
        {
            if (rng.NextDouble() < 0.3)
            {
                var facts = new List<string>();
                int n = 2 + rng.Next(3);
                for (int j = 0; j < n; j++)
                {
                    var p = World.DrawPrompt(rng, World.AllPrompts);
                    string value = World.CorrectValue(p.Kind, p.Subject);
                    if (rng.NextDouble() < 0.1)
                        value = (p.Kind == QuestionKind.Color ? World.ColorValues : World.SoundValues)[rng.Next(p.Kind == QuestionKind.Color ? World.ColorValues.Count : World.SoundValues.Count)];
                    facts.Add(World.AnswerText(p.Kind, p.Subject, value));
                }
                docs.Add(World.Render(facts).TrimStart());
            }
            else
            {
                var p = World.DrawPrompt(rng, prompts);
                docs.Add(p.Text + ResponseWriter.Write(p, ResponseStyle.Corpus, rng));
            }
        }
        return docs;
    }
}
