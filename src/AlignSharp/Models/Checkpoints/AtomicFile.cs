namespace AlignSharp.Models.Checkpoints;

/// <summary>Writes a file so that readers see either the old file or the complete new one: the content goes to a
/// temporary file in the same directory, is flushed to disk, and is then renamed over the target. A symbolic link is
/// written through (its target replaced, the link kept), as writing to it would.</summary>
public static class AtomicFile
{
    public static void Write(string path, Action<Stream> write)
    {
        string full = System.IO.Path.GetFullPath(path);
        if (File.Exists(full) && new FileInfo(full).ResolveLinkTarget(returnFinalTarget: true) is { } target) full = target.FullName;
        string directory = System.IO.Path.GetDirectoryName(full)!;
        try { Directory.CreateDirectory(directory); }
        catch (IOException e) { throw new UserInputException($"{path}: cannot create its folder {directory}: {e.Message}"); }
        string temp = System.IO.Path.Combine(directory, $".{System.IO.Path.GetFileName(full)}.{Guid.NewGuid():N}.tmp");
        try
        {
            using (var stream = new FileStream(temp, FileMode.CreateNew, FileAccess.Write, FileShare.None, 1 << 20))
            {
                write(stream);
                stream.Flush(flushToDisk: true);
            }
            File.Move(temp, full, overwrite: true);
        }
        catch
        {
            try { File.Delete(temp); } catch (IOException) { } catch (UnauthorizedAccessException) { }
            throw;
        }
    }

    public static void WriteText(string path, string text) =>
        Write(path, s =>
        {
            var bytes = new System.Text.UTF8Encoding(false).GetBytes(text);
            s.Write(bytes);
        });
}
