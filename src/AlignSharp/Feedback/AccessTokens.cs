using System.Security.Cryptography;
using System.Text;

namespace AlignSharp.Feedback;

/// <summary>
/// Annotator access tokens: 32 bytes from the operating system's cryptographic generator, written in URL-safe
/// base64 (so they fit in a sign-in link). Only the SHA-256 of a token is stored; a presented token is hashed
/// and compared against stored hashes in constant time.
/// </summary>
public static class AccessTokens
{
    public const int SecretBytes = 32;

    public static string NewToken()
    {
        Span<byte> secret = stackalloc byte[SecretBytes];
        RandomNumberGenerator.Fill(secret);
        return Convert.ToBase64String(secret).TrimEnd('=').Replace('+', '-').Replace('/', '_');
    }

    public static byte[] Hash(string token) => SHA256.HashData(Encoding.UTF8.GetBytes(token));

    /// <summary>Constant-time comparison of a presented token with a stored hash.</summary>
    public static bool Matches(string token, ReadOnlySpan<byte> storedHash) =>
        CryptographicOperations.FixedTimeEquals(Hash(token), storedHash);
}
