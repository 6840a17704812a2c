using System.Net;
using AlignSharp.Feedback;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Hosting;
using Microsoft.AspNetCore.Hosting.Server;
using Microsoft.AspNetCore.Hosting.Server.Features;
using Microsoft.Extensions.DependencyInjection;

namespace AlignSharp.Web;

/// <summary>Where and how the annotation app listens.</summary>
public sealed record AnnotationServerOptions
{
    /// <summary>Address to bind: an IP address or "localhost" (default 127.0.0.1, reachable from this machine only).</summary>
    public string Host { get; init; } = "127.0.0.1";

    /// <summary>TCP port (default 8080; 0 picks a free one, see <see cref="AnnotationServer.BaseAddress"/>).</summary>
    public int Port { get; init; } = 8080;

    /// <summary>Largest request body accepted, in bytes (default 64 KiB); larger requests get 413.</summary>
    public long MaxRequestBodyBytes { get; init; } = 64 * 1024;

    public void Validate()
    {
        if (Port < 0 || Port > 65535) throw new UserInputException($"port must be between 0 and 65535, got {Port}.");
        if (MaxRequestBodyBytes < 1024) throw new UserInputException($"the request size limit must be at least 1024 bytes, got {MaxRequestBodyBytes}.");
        _ = ParseHost(Host);
    }

    internal static IPAddress ParseHost(string host)
    {
        if (string.Equals(host, "localhost", StringComparison.OrdinalIgnoreCase)) return IPAddress.Loopback;
        if (IPAddress.TryParse(host, out var ip)) return ip;
        throw new UserInputException($"--host must be an IP address (e.g. 127.0.0.1, 0.0.0.0) or localhost, got '{host}'.");
    }
}

/// <summary>
/// The annotation web app over one project store: the embedded page at <c>/</c> and the JSON API under
/// <c>/api/</c> (see docs/annotation.md). Kestrel only, no configuration files, no logging providers: unexpected
/// errors are written to standard error.
/// </summary>
public sealed class AnnotationServer : IAsyncDisposable
{
    private readonly WebApplication _app;

    private AnnotationServer(WebApplication app, Uri baseAddress)
    {
        _app = app;
        BaseAddress = baseAddress;
    }

    /// <summary>The address the server listens on, with the real port when 0 was asked for, ending in '/'.</summary>
    public Uri BaseAddress { get; }

    public static async Task<AnnotationServer> StartAsync(AnnotationStore store, AnnotationServerOptions options, CancellationToken cancellation = default)
    {
        options.Validate();
        var ip = AnnotationServerOptions.ParseHost(options.Host);
        var builder = WebApplication.CreateEmptyBuilder(new WebApplicationOptions { ApplicationName = typeof(AnnotationServer).Assembly.GetName().Name });
        builder.WebHost.UseKestrelCore().ConfigureKestrel(k =>
        {
            k.AddServerHeader = false;
            k.Limits.MaxRequestBodySize = options.MaxRequestBodyBytes;
            k.Limits.MaxRequestHeadersTotalSize = 16 * 1024;
            k.Limits.MaxRequestLineSize = 4 * 1024;
            k.Listen(ip, options.Port);
        });
        builder.Services.AddRoutingCore();
        var app = builder.Build();
        ApiEndpoints.Map(app, store);
        StaticAssets.Map(app);
        try
        {
            await app.StartAsync(cancellation);
        }
        catch (IOException e)
        {
            await app.DisposeAsync();
            throw new UserInputException($"cannot listen on {options.Host}:{options.Port}: {e.Message}", e);
        }
        var address = app.Services.GetRequiredService<IServer>().Features.Get<IServerAddressesFeature>()!.Addresses.First();
        var bound = new Uri(address);
        // Kestrel reports the address it bound; make it a URL a browser on this machine can open.
        string host = ip.Equals(IPAddress.Any) || ip.Equals(IPAddress.IPv6Any) ? "127.0.0.1" : bound.Host;
        return new AnnotationServer(app, new UriBuilder("http", host, bound.Port, "/").Uri);
    }

    public Task StopAsync(CancellationToken cancellation = default) => _app.StopAsync(cancellation);

    public async ValueTask DisposeAsync()
    {
        try { await _app.StopAsync(); } catch (OperationCanceledException) { }
        await _app.DisposeAsync();
    }
}
