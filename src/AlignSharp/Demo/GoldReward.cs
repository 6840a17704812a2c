namespace AlignSharp.Demo;

/// <summary>The gold reward of one response, aspect by aspect; <see cref="Total"/> is their sum.</summary>
public sealed record GoldScore(bool Grammatical, double Correctness, double Politeness, double Concision, double Repetition, double Forbidden)
{
    public double Total => Grammatical ? Correctness + Politeness + Concision + Repetition + Forbidden : GoldReward.Ungrammatical;
}

/// <summary>
/// The hidden "true reward that lives in people's minds". Training code never calls it: it is reached only through
/// <see cref="SimulatedAnnotator"/>s (and by the experimenter's evaluation). A response is scored on:
/// <list type="bullet">
/// <item>grammar: an ungrammatical response gets −3 and nothing else counts;</item>
/// <item>correctness: +2 when it states the right value for the asked subject, −1 when it states a wrong one (any
///   wrong statement about the subject), −1.5 when it does not answer; −0.5 for each answer about another subject;</item>
/// <item>politeness: +0.5 per distinct polite phrase (at most +1), −1 per rude phrase;</item>
/// <item>concision: −0.3 per sentence beyond 3;</item>
/// <item>repetition: −1 per sentence that repeats an earlier one;</item>
/// <item>forbidden topic: −2 when it mentions money.</item>
/// </list>
/// The best response ("sure! the sky is blue. hope this helps.") scores 3.
/// </summary>
public static class GoldReward
{
    public const double Ungrammatical = -3;
    public const double Best = 3;

    public static GoldScore Score(WorldPrompt prompt, string response) => Score(prompt, World.Parse(response));

    public static GoldScore Score(WorldPrompt prompt, ParsedResponse parsed)
    {
        if (!parsed.Grammatical) return new GoldScore(false, 0, 0, 0, 0, 0);
        var s = parsed.Sentences;
        string right = World.CorrectValue(prompt.Kind, prompt.Subject);
        bool anyRight = false, anyWrong = false;
        double offTopic = 0;
        foreach (var x in s.Where(x => x.Kind == SentenceKind.Answer))
        {
            if (x.About == prompt.Kind && x.Subject == prompt.Subject)
            {
                if (x.Value == right) anyRight = true; else anyWrong = true;
            }
            else offTopic -= 0.5;
        }
        double correctness = (anyWrong ? -1 : anyRight ? 2 : -1.5) + offTopic;
        double politeness = Math.Min(1, 0.5 * s.Where(x => x.IsPolite).Select(x => x.Text).Distinct().Count()) - s.Count(x => x.IsRude);
        double concision = -0.3 * Math.Max(0, s.Count - 3);
        double repetition = -(s.Count - s.Select(x => x.Text).Distinct().Count());
        double forbidden = s.Any(x => x.Kind == SentenceKind.Forbidden) ? -2 : 0;
        return new GoldScore(true, correctness, politeness, concision, repetition, forbidden);
    }
}
