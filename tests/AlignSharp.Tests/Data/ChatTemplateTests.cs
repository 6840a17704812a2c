using AlignSharp.Training.Data;

namespace AlignSharp.Tests.Data;

public class ChatTemplateTests
{
    private static readonly ChatMessage[] Conversation =
        [ChatMessage.System("Be brief."), ChatMessage.User("Hi"), ChatMessage.Assistant("Hello!"), ChatMessage.User("Bye")];

    [Fact]
    public void ChatMlRendersExactly()
    {
        var t = ChatTemplate.Get("chatml");
        Assert.Equal(
            "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\nHello!<|im_end|>\n<|im_start|>user\nBye<|im_end|>\n<|im_start|>assistant\n",
            t.RenderPrompt(Conversation));
        Assert.Equal("<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\nHello!<|im_end|>\n",
            t.RenderConversation([ChatMessage.User("Hi"), ChatMessage.Assistant("Hello!")]));
        Assert.Equal("<|im_start|>assistant\n", t.RenderPrompt(Array.Empty<ChatMessage>()));
    }

    [Fact]
    public void Llama3RendersExactly()
    {
        var t = ChatTemplate.Get("llama3");
        Assert.Equal(
            "<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\nBe brief.<|eot_id|><|start_header_id|>user<|end_header_id|>\n\nHi<|eot_id|>" +
            "<|start_header_id|>assistant<|end_header_id|>\n\nHello!<|eot_id|><|start_header_id|>user<|end_header_id|>\n\nBye<|eot_id|>" +
            "<|start_header_id|>assistant<|end_header_id|>\n\n",
            t.RenderPrompt(Conversation));
        Assert.Equal(("<|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\nHi<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n", "Yo<|eot_id|>"),
            t.RenderPromptAndCompletion(ChatContent.FromMessages(ChatMessage.User("Hi")), ChatContent.FromText("Yo")));
    }

    [Fact]
    public void PlainRendersExactly()
    {
        var t = ChatTemplate.Get("plain");
        Assert.Equal("System: Be brief.\nUser: Hi\nAssistant: Hello!\nUser: Bye\nAssistant:", t.RenderPrompt(Conversation));
        Assert.Equal("User: Hi\nAssistant: Hello!\n", t.RenderConversation([ChatMessage.User("Hi"), ChatMessage.Assistant("Hello!")]));
        var (prompt, completion) = t.RenderPromptAndCompletion(ChatContent.FromMessages(ChatMessage.User("Hi")), ChatContent.FromMessages(ChatMessage.Assistant("Hello!")));
        Assert.Equal(("User: Hi\nAssistant:", " Hello!\n"), (prompt, completion));
    }

    [Fact]
    public void PlainTextIsNeverTemplated()
    {
        foreach (var name in ChatTemplate.Names)
        {
            var t = ChatTemplate.Get(name);
            Assert.Equal(("\n\nHuman: hi\n\nAssistant:", " hello"), t.RenderPromptAndCompletion(ChatContent.FromText("\n\nHuman: hi\n\nAssistant:"), ChatContent.FromText(" hello")));
            Assert.Equal("Write a poem.", t.RenderPrompt(ChatContent.FromText("Write a poem.")));
        }
    }

    [Fact]
    public void TextPromptWithMessageAnswerBecomesAUserTurn()
    {
        Assert.Equal(("<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n", "Yo<|im_end|>\n"),
            ChatTemplate.ChatMl.RenderPromptAndCompletion(ChatContent.FromText("Hi"), ChatContent.FromMessages(ChatMessage.Assistant("Yo"))));
    }

    [Fact]
    public void APromptEndingWithTheAssistantsWordsIsContinued()
    {
        // transformers' continue_final_message (TRL's rendering of such prompts): no generation prompt, the text cut
        // after the final message. ChatML keeps the content's trailing space; a template that trims content is cut
        // after the trimmed words.
        var prefill = new[] { ChatMessage.User("Hi"), ChatMessage.Assistant("Sure, ") };
        Assert.Equal("<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\nSure, ", ChatTemplate.ChatMl.RenderPrompt(prefill));
        string jinja = Path.Combine(Path.GetTempPath(), $"alignsharp-trim-{Guid.NewGuid():N}.jinja");
        File.WriteAllText(jinja, "{% for m in messages %}<{{ m['role'] }}>{{ m['content'] | trim }}</s>{% endfor %}{% if add_generation_prompt %}<assistant>{% endif %}");
        try { Assert.Equal("<user>Hi</s><assistant>Sure,", ChatTemplate.Resolve(jinja, null).RenderPrompt(prefill)); }
        finally { File.Delete(jinja); }
        // An empty final message leaves the rendering whole; a user-last prompt still gets the generation prompt.
        Assert.Equal(ChatTemplate.ChatMl.RenderConversation([ChatMessage.User("Hi"), ChatMessage.Assistant("")]),
            ChatTemplate.ChatMl.RenderPrompt([ChatMessage.User("Hi"), ChatMessage.Assistant("")]));
        Assert.EndsWith("<|im_start|>assistant\n", ChatTemplate.ChatMl.RenderPrompt([ChatMessage.User("Hi")]));
    }

    [Fact]
    public void UnknownTemplateNameIsAClearError()
    {
        var e = Assert.Throws<UserInputException>(() => ChatTemplate.Get("vicuna"));
        Assert.Equal("unknown chat template \"vicuna\"; choose auto, a .jinja file, or one of: chatml, llama3, plain.", e.Message);
        var option = Assert.Throws<UserInputException>(() => ChatTemplate.ValidateOption("vicuna"));
        Assert.Contains("neither auto, a built-in template (chatml, llama3, plain), nor an existing .jinja file", option.Message);
        Assert.Same(ChatTemplate.ChatMl, ChatTemplate.Get("ChatML"));
    }

    /// <summary>A template that renders an earlier turn otherwise once the conversation goes on (here, as Phi-3's, EOS
    /// closes a conversation only without a generation prompt) leaves that turn in the prompt and counts it, so that
    /// sft can say which turns get no loss.</summary>
    [Fact]
    public void EarlierTurnsTheTemplateRendersOtherwiseAreCountedAsMasked()
    {
        string file = Path.Combine(Path.GetTempPath(), $"phi-like-{Guid.NewGuid():N}.jinja");
        File.WriteAllText(file, "{% for m in messages %}<|{{ m.role }}|>{{ m.content }}<|end|>{% endfor %}{% if add_generation_prompt %}<|assistant|>{% else %}<|endoftext|>{% endif %}");
        try
        {
            var example = new SftExample(ChatContent.FromMessages([.. Conversation]), ChatContent.FromMessages(ChatMessage.Assistant("Goodbye.")), new RecordSource("f", 1))
                { PromptField = "messages", CompletionField = "messages" };
            var phi = ChatTemplate.Resolve(file, null).RenderSft(example);
            Assert.Equal(1, phi.MaskedEarlierTurns);
            Assert.DoesNotContain(phi, s => s.Role == SegmentRole.EarlierAssistantTurn);
            Assert.Equal(new TextSegment("Goodbye.<|end|><|endoftext|>", SegmentRole.Completion), phi[^1]);
            Assert.Equal(0, ChatTemplate.ChatMl.RenderSft(example).MaskedEarlierTurns);
        }
        finally { File.Delete(file); }
    }

    [Fact]
    public void SftSegmentsMarkPromptEarlierTurnsAndCompletion()
    {
        // A "messages" record: its earlier assistant turn is an answer too.
        var example = new SftExample(ChatContent.FromMessages([.. Conversation]), ChatContent.FromMessages(ChatMessage.Assistant("Goodbye.")), new RecordSource("f", 1))
            { PromptField = "messages", CompletionField = "messages" };
        var segments = ChatTemplate.ChatMl.RenderSft(example);
        Assert.Equal(
            [
                new TextSegment("<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n", SegmentRole.Prompt),
                new TextSegment("Hello!<|im_end|>\n", SegmentRole.EarlierAssistantTurn),
                new TextSegment("<|im_start|>user\nBye<|im_end|>\n<|im_start|>assistant\n", SegmentRole.Prompt),
                new TextSegment("Goodbye.<|im_end|>\n", SegmentRole.Completion),
            ],
            segments);
        // The segments are exactly the whole conversation.
        Assert.Equal(ChatTemplate.ChatMl.RenderConversation([.. Conversation, ChatMessage.Assistant("Goodbye.")]), string.Concat(segments.Select(s => s.Text)));

        // The same turns given as "prompt" and "completion": the prompt is masked whole (TRL's completion_only_loss).
        var given = ChatTemplate.ChatMl.RenderSft(example with { PromptField = "prompt", CompletionField = "completion" });
        Assert.Equal(
            [
                new TextSegment("<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\nHello!<|im_end|>\n<|im_start|>user\nBye<|im_end|>\n<|im_start|>assistant\n", SegmentRole.Prompt),
                new TextSegment("Goodbye.<|im_end|>\n", SegmentRole.Completion),
            ],
            given);

        var plain = ChatTemplate.Plain.RenderSft(example);
        Assert.Equal(ChatTemplate.Plain.RenderConversation([.. Conversation, ChatMessage.Assistant("Goodbye.")]), string.Concat(plain.Select(s => s.Text)));
        Assert.Equal(new TextSegment(" Goodbye.\n", SegmentRole.Completion), plain[^1]);

        var text = ChatTemplate.Llama3.RenderSft(new SftExample(null, ChatContent.FromText("All of it."), new RecordSource("f", 2)));
        Assert.Equal([new TextSegment("All of it.", SegmentRole.Completion)], text);
        var pc = ChatTemplate.Llama3.RenderSft(new SftExample(ChatContent.FromText("Q: "), ChatContent.FromText("A"), new RecordSource("f", 3)));
        Assert.Equal([new TextSegment("Q: ", SegmentRole.Prompt), new TextSegment("A", SegmentRole.Completion)], pc);
    }
}
