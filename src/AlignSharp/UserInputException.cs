namespace AlignSharp;

/// <summary>
/// Bad input from the user (a file, a flag, a record): the message names the file, line and field where
/// known, and front ends print it without a stack trace.
/// </summary>
public class UserInputException(string message, Exception? inner = null) : Exception(message, inner);
