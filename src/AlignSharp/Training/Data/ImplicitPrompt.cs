namespace AlignSharp.Training.Data;

/// <summary>
/// Splits a pair of whole transcripts that share their beginning (Anthropic HH-RLHF's {"chosen","rejected"}) into
/// the shared prompt and the two answers.
/// </summary>
public static class ImplicitPrompt
{
    /// <summary>The marker that starts an assistant turn in HH transcripts.</summary>
    public const string AssistantMarker = "\n\nAssistant:";

    /// <summary>
    /// Text transcripts ("\n\nHuman: ... \n\nAssistant: ..."). Let L be the length of the longest common prefix of
    /// <paramref name="chosen"/> and <paramref name="rejected"/> (ordinal, char by char). The prompt is
    /// <c>chosen[..(k + 12)]</c> where k is the last index at which "\n\nAssistant:" occurs entirely inside that common
    /// prefix (k + 12 ≤ L): the prompt ends with, and includes, the last assistant marker the two transcripts share.
    /// The answers are the rest of each transcript, kept verbatim (usually starting with a space). Texts that are not
    /// HH transcripts (no marker in either) split as TRL's extract_prompt splits them: the prompt is the common prefix,
    /// less a space it ends with (which starts both answers instead): "The sky is blue." and "The sky is green." give
    /// "The sky is", " blue." and " green.". False, with the reason, when there is no such split.
    /// </summary>
    public static bool TrySplit(string chosen, string rejected, out string prompt, out string chosenAnswer, out string rejectedAnswer, out string? problem)
    {
        int common = 0;
        int max = Math.Min(chosen.Length, rejected.Length);
        while (common < max && chosen[common] == rejected[common]) common++;
        int k = chosen.AsSpan(0, common).LastIndexOf(AssistantMarker.AsSpan(), StringComparison.Ordinal);
        bool transcripts = chosen.Contains(AssistantMarker, StringComparison.Ordinal) || rejected.Contains(AssistantMarker, StringComparison.Ordinal);
        if (!transcripts)
        {
            prompt = chosenAnswer = rejectedAnswer = "";
            if (common == 0 || common == max)
            {
                problem = common == 0
                    ? "\"chosen\" and \"rejected\" share no beginning, so no common prompt can be found; give an explicit \"prompt\" field"
                    : "one of \"chosen\" and \"rejected\" is the beginning of the other, so no prompt and two answers can be told apart; give an explicit \"prompt\" field";
                return false;
            }
            int end = chosen[common - 1] == ' ' ? common - 1 : common;
            (prompt, chosenAnswer, rejectedAnswer, problem) = (chosen[..end], chosen[end..], rejected[end..], null);
            return true;
        }
        if (k < 0)
        {
            prompt = chosenAnswer = rejectedAnswer = "";
            problem = chosen.Contains(AssistantMarker, StringComparison.Ordinal)
                ? "the \"chosen\" and \"rejected\" transcripts share no \"\\n\\nAssistant:\" turn, so no common prompt can be found; give an explicit \"prompt\" field"
                : "no \"\\n\\nAssistant:\" turn; a {\"chosen\",\"rejected\"} record without \"prompt\" must hold whole Anthropic HH transcripts (\"\\n\\nHuman: ...\\n\\nAssistant: ...\"), or add a \"prompt\" field";
            return false;
        }
        int cut = k + AssistantMarker.Length;
        prompt = chosen[..cut];
        chosenAnswer = chosen[cut..];
        rejectedAnswer = rejected[cut..];
        problem = null;
        return true;
    }

    /// <summary>
    /// Message transcripts: the prompt is the longest run of leading messages equal in both (role and content),
    /// shortened until both transcripts still have messages after it and the next message of each is an assistant
    /// turn. Returns the number of prompt messages, or 0 when there is no such prompt.
    /// </summary>
    public static int SharedPromptLength(IReadOnlyList<ChatMessage> chosen, IReadOnlyList<ChatMessage> rejected)
    {
        int k = 0;
        while (k < chosen.Count && k < rejected.Count && chosen[k] == rejected[k]) k++;
        while (k > 0 && (k >= chosen.Count || k >= rejected.Count || chosen[k].Role != ChatRole.Assistant || rejected[k].Role != ChatRole.Assistant)) k--;
        return k;
    }
}
