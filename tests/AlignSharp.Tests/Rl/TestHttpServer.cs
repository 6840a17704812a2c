using System.Net;
using System.Net.Sockets;
using System.Text;

namespace AlignSharp.Tests.Rl;

/// <summary>Answers each request with handler(request number, body) → (status, body, delay before answering).</summary>
public sealed class TestHttpServer : IDisposable
{
    private readonly HttpListener _listener;
    private readonly Thread _thread;
    public int Requests;
    public readonly List<string> Bodies = [];
    public string Url { get; }

    public TestHttpServer(Func<int, string, (int Status, string Body, int DelayMs)> handler)
    {
        // A free port found by a probe can be taken by another test's socket before the listener binds it (CI once
        // failed so: "Address already in use"), so a taken port is tried again with another.
        for (int attempt = 1; ; attempt++)
        {
            var probe = new TcpListener(IPAddress.Loopback, 0);
            probe.Start();
            int port = ((IPEndPoint)probe.LocalEndpoint).Port;
            probe.Stop();
            string url = $"http://127.0.0.1:{port}/score/";
            var listener = new HttpListener();
            listener.Prefixes.Add(url);
            try
            {
                listener.Start();
                (_listener, Url) = (listener, url);
                break;
            }
            catch (HttpListenerException) when (attempt < 10)
            {
                listener.Close();
            }
        }
        _thread = new Thread(() =>
        {
            while (_listener.IsListening)
            {
                HttpListenerContext ctx;
                try { ctx = _listener.GetContext(); } catch (Exception) { return; }
                string body = new StreamReader(ctx.Request.InputStream, Encoding.UTF8).ReadToEnd();
                int n = Interlocked.Increment(ref Requests);
                lock (Bodies) Bodies.Add(body);
                var (status, answer, delay) = handler(n, body);
                ThreadPool.QueueUserWorkItem(_ =>
                {
                    try
                    {
                        if (delay > 0) Thread.Sleep(delay);
                        ctx.Response.StatusCode = status;
                        var bytes = Encoding.UTF8.GetBytes(answer);
                        ctx.Response.OutputStream.Write(bytes);
                        ctx.Response.Close();
                    }
                    catch (Exception) { }
                });
            }
        }) { IsBackground = true };
        _thread.Start();
    }

    public void Dispose() => _listener.Close();
}
