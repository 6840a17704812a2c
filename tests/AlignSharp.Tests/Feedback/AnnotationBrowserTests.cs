using System.Drawing;
using System.Text.Json.Nodes;
using AlignSharp.Feedback;
using OpenQA.Selenium;
using OpenQA.Selenium.Chrome;
using OpenQA.Selenium.Interactions;
using OpenQA.Selenium.Support.UI;

namespace AlignSharp.Tests.Feedback;

/// <summary>A Fact that runs only where Debian's chromium and chromium-driver are installed, and says why it skipped otherwise.</summary>
public sealed class ChromiumFactAttribute : FactAttribute
{
    public const string Browser = "/usr/bin/chromium";
    public const string Driver = "/usr/bin/chromedriver";

    public ChromiumFactAttribute()
    {
        var missing = new[] { Browser, Driver }.Where(p => !File.Exists(p)).ToArray();
        if (missing.Length > 0)
            Skip = $"headless Chromium is not installed ({string.Join(" and ", missing)} missing); install it with: apt-get install -y chromium chromium-driver";
    }
}

/// <summary>The annotation page end to end in headless Chromium, driven through chromium-driver.</summary>
public class AnnotationBrowserTests
{
    private static ChromeDriver StartChromium(string profileDirectory)
    {
        var service = ChromeDriverService.CreateDefaultService(Path.GetDirectoryName(ChromiumFactAttribute.Driver)!, Path.GetFileName(ChromiumFactAttribute.Driver));
        service.SuppressInitialDiagnosticInformation = true;
        service.HideCommandPromptWindow = true;
        var options = new ChromeOptions { BinaryLocation = ChromiumFactAttribute.Browser };
        options.AddArguments(
            "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run",
            "--disable-background-networking", "--disable-component-update", "--disable-sync",
            $"--user-data-dir={profileDirectory}", "--window-size=1000,1300");
        return new ChromeDriver(service, options, TimeSpan.FromSeconds(60));
    }

    private static IWebElement Card(IWebDriver driver, string list, int label) =>
        driver.FindElement(By.CssSelector($"#{list} .card[data-label='{label}']"));

    private static int[] RankedLabels(IWebDriver driver) =>
        driver.FindElements(By.CssSelector("#ranked .card")).Select(c => int.Parse(c.GetDomAttribute("data-label")!)).ToArray();

    /// <summary>Drags a card by its bar to just below the top edge of <paramref name="target"/>, in small steps as a hand would.</summary>
    private static void DragToTopOf(IWebDriver driver, IWebElement card, IWebElement target)
    {
        var head = card.FindElement(By.CssSelector(".card-head .handle"));
        var from = head.Location;
        var to = target.Location;
        int dx = to.X + 20 - from.X, dy = to.Y + 6 - from.Y;
        var actions = new Actions(driver).MoveToElement(head).ClickAndHold();
        for (int step = 1; step <= 8; step++) actions.MoveByOffset(dx / 8, dy / 8);
        actions.MoveByOffset(dx - 8 * (dx / 8), dy - 8 * (dy / 8)).Release().Perform();
    }

    [ChromiumFact]
    public async Task AnnotatorSignsInRanksByKeyboardAndDragAndDropAndTheExportHasIt()
    {
        using var dir = new TempDir();
        const string hostile = "<img src=x onerror=\"document.title='pwned'\">bravo";
        using var store = AnnotationStore.Create(dir.File("web.annotations.db"), "web", 1, "test", null,
        [
            new PromptCompletions("First prompt", ["alpha", hostile, "charlie", "delta"]),
            new PromptCompletions("Second prompt", ["one", "two", "three", "four"]),
        ]);
        var (_, token) = store.AddAnnotator("eve");
        var (_, adminToken) = store.AddAnnotator("boss", isAdmin: true);
        await using var server = await RunningServer.StartAsync(store);

        using var driver = StartChromium(dir.File("profile"));
        var wait = new WebDriverWait(driver, TimeSpan.FromSeconds(10));
        var keys = new Actions(driver);

        // Sign in with the link add-annotator prints; the token leaves the address bar.
        driver.Navigate().GoToUrl($"{server.BaseAddress}#token={token}");
        wait.Until(d => d.FindElements(By.CssSelector("#unranked .card")).Count == 4);
        Assert.DoesNotContain(token, driver.Url);
        Assert.Equal("Done 0 / 2", driver.FindElement(By.Id("progress")).Text);
        Assert.Equal("First prompt", driver.FindElement(By.Id("prompt")).Text);

        // Which completion carries which number: the order shown, recorded by the server.
        var idOf = driver.FindElements(By.CssSelector("#unranked .card")).ToDictionary(
            c => int.Parse(c.GetDomAttribute("data-label")!), c => int.Parse(c.GetDomAttribute("data-id")!));
        Assert.Equal(new[] { 1, 2, 3, 4 }, idOf.Keys.Order());

        // Model output is shown as text: the markup is visible, nothing runs.
        var hostileCard = driver.FindElements(By.CssSelector("#unranked .card")).Single(c => c.GetDomAttribute("data-id") == "1");
        Assert.Equal(hostile, hostileCard.FindElement(By.CssSelector(".text")).Text);
        Assert.Empty(driver.FindElements(By.CssSelector(".card img")));
        Assert.NotEqual("pwned", driver.Title);

        // Phone-sized screen: nothing sticks out sideways.
        driver.Manage().Window.Size = new Size(390, 844);
        Assert.Equal(true, driver.ExecuteScript("return document.documentElement.scrollWidth <= window.innerWidth;"));
        driver.Manage().Window.Size = new Size(1000, 1300);

        // Keyboard: 3 then 1 go first and second; T ties 1 with 3.
        keys.SendKeys("3").SendKeys("1").SendKeys("t").Perform();
        wait.Until(d => RankedLabels(d).SequenceEqual([3, 1]));
        Assert.Contains("tied", Card(driver, "ranked", 1).GetDomAttribute("class"));
        Assert.Equal("#1 =", Card(driver, "ranked", 1).FindElement(By.CssSelector(".rank")).Text);

        // Drag and drop: card 4 from the unranked list to the top of the ranking.
        DragToTopOf(driver, Card(driver, "unranked", 4), driver.FindElement(By.CssSelector("#ranked .card")));
        wait.Until(d => RankedLabels(d).SequenceEqual([4, 3, 1]));

        // Flag 2 as broken, then key 2 puts it last; submit.
        Card(driver, "unranked", 2).FindElement(By.CssSelector("button[data-flag='broken']")).Click();
        keys.SendKeys("2").Perform();
        wait.Until(d => RankedLabels(d).SequenceEqual([4, 3, 1, 2]));
        var submit = driver.FindElement(By.Id("submit-button"));
        Assert.True(submit.Enabled);
        submit.Click();

        // The next task comes; rank it by keyboard (the last one places itself), reorder by dragging, submit with Enter.
        wait.Until(d => d.FindElement(By.Id("prompt")).Text == "Second prompt" && d.FindElements(By.CssSelector("#unranked .card")).Count == 4);
        Assert.Equal("Done 1 / 2", driver.FindElement(By.Id("progress")).Text);
        var idOf2 = driver.FindElements(By.CssSelector("#unranked .card")).ToDictionary(
            c => int.Parse(c.GetDomAttribute("data-label")!), c => int.Parse(c.GetDomAttribute("data-id")!));

        // Change the previous answer: it comes back as submitted (a tie group in id order); tie 2 in as well and resubmit.
        driver.FindElement(By.Id("previous-button")).Click();
        wait.Until(d => d.FindElement(By.Id("prompt")).Text == "First prompt" && RankedLabels(d).Length == 4);
        var restored = RankedLabels(driver);
        Assert.Equal(4, restored[0]);
        Assert.Equal(2, restored[3]);
        Assert.Equal([1, 3], restored[1..3].Order());
        keys.SendKeys("t").Perform();
        wait.Until(d => Card(d, "ranked", 2).GetDomAttribute("class")!.Contains("tied"));
        driver.FindElement(By.Id("submit-button")).Click();
        wait.Until(d => d.FindElement(By.Id("prompt")).Text == "Second prompt" && d.FindElements(By.CssSelector("#unranked .card")).Count == 4);
        Assert.Equal("Done 1 / 2", driver.FindElement(By.Id("progress")).Text);
        keys.SendKeys("4").SendKeys("3").SendKeys("2").Perform();
        wait.Until(d => RankedLabels(d).SequenceEqual([4, 3, 2, 1]));
        DragToTopOf(driver, Card(driver, "ranked", 1), driver.FindElement(By.CssSelector("#ranked .card")));
        wait.Until(d => RankedLabels(d).SequenceEqual([1, 4, 3, 2]));
        keys.SendKeys(Keys.Enter).Perform();
        wait.Until(d => d.FindElement(By.Id("done-view")).Displayed);
        Assert.Equal("Done 2 / 2", driver.FindElement(By.Id("progress")).Text);

        // The export holds both rankings, ties and flags included, with the order shown.
        var writer = new StringWriter();
        AnnotationExport.WriteRankings("web", store.SubmittedRankings(), writer);
        var lines = writer.ToString().Split('\n', StringSplitOptions.RemoveEmptyEntries).Select(l => JsonNode.Parse(l)!).ToList();
        Assert.Equal(2, lines.Count);
        var first = lines.Single(l => (string)l["prompt"]! == "First prompt");
        // Edited: 2 joined the tie of 3 and 1.
        Assert.Equal(2, (int)first["revision"]!);
        Assert.Equal($"[{idOf[4]},[{string.Join(",", new[] { idOf[3], idOf[1], idOf[2] }.Order())}]]", first["ranking"]!.ToJsonString());
        Assert.Equal($"[{{\"completion_id\":{idOf[2]},\"flag\":\"broken\"}}]", first["flags"]!.ToJsonString());
        Assert.Equal($"[{idOf[1]},{idOf[2]},{idOf[3]},{idOf[4]}]", first["display_order"]!.ToJsonString());
        Assert.Equal("eve", (string)first["annotator"]!);
        var second = lines.Single(l => (string)l["prompt"]! == "Second prompt");
        Assert.Equal($"[{idOf2[1]},{idOf2[4]},{idOf2[3]},{idOf2[2]}]", second["ranking"]!.ToJsonString());

        // The admin view, from the admin's sign-in link.
        driver.Navigate().GoToUrl($"{server.BaseAddress}admin#token={adminToken}");
        wait.Until(d => d.FindElement(By.Id("admin-view")).Displayed
            && d.FindElements(By.CssSelector("#annotator-table tbody tr")).Count == 2);
        var eveRow = driver.FindElements(By.CssSelector("#annotator-table tbody tr")).Single(r => r.Text.StartsWith("eve"));
        Assert.Equal(["eve", "2", "0", "0", "1"], eveRow.FindElements(By.TagName("td")).Select(td => td.Text));
        Assert.Contains("2 of 2 rankings", driver.FindElement(By.Id("admin-summary")).Text);
    }
}
