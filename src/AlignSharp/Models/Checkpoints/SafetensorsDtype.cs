namespace AlignSharp.Models.Checkpoints;

/// <summary>Element types a safetensors header can name. Reading converts F32, F16, BF16 and F64 to float32;
/// the others are recognised so that the error can name them.</summary>
public enum SafetensorsDtype
{
    F32,
    F16,
    BF16,
    F64,
    I64,
    I32,
    I16,
    I8,
    U8,
    U16,
    U32,
    U64,
    Bool,
    F8E4M3,
    F8E5M2,
}

internal static class SafetensorsDtypes
{
    /// <summary>The dtype as it is spelled in a safetensors header ("F32", "BF16", "F8_E4M3", ...).</summary>
    public static string HeaderName(this SafetensorsDtype dtype) => dtype switch
    {
        SafetensorsDtype.Bool => "BOOL",
        SafetensorsDtype.F8E4M3 => "F8_E4M3",
        SafetensorsDtype.F8E5M2 => "F8_E5M2",
        _ => dtype.ToString(),
    };

    public static bool TryParse(string name, out SafetensorsDtype dtype)
    {
        switch (name)
        {
            case "F32": dtype = SafetensorsDtype.F32; return true;
            case "F16": dtype = SafetensorsDtype.F16; return true;
            case "BF16": dtype = SafetensorsDtype.BF16; return true;
            case "F64": dtype = SafetensorsDtype.F64; return true;
            case "I64": dtype = SafetensorsDtype.I64; return true;
            case "I32": dtype = SafetensorsDtype.I32; return true;
            case "I16": dtype = SafetensorsDtype.I16; return true;
            case "I8": dtype = SafetensorsDtype.I8; return true;
            case "U8": dtype = SafetensorsDtype.U8; return true;
            case "U16": dtype = SafetensorsDtype.U16; return true;
            case "U32": dtype = SafetensorsDtype.U32; return true;
            case "U64": dtype = SafetensorsDtype.U64; return true;
            case "BOOL": dtype = SafetensorsDtype.Bool; return true;
            case "F8_E4M3": dtype = SafetensorsDtype.F8E4M3; return true;
            case "F8_E5M2": dtype = SafetensorsDtype.F8E5M2; return true;
            default: dtype = default; return false;
        }
    }

    public static int ByteSize(this SafetensorsDtype dtype) => dtype switch
    {
        SafetensorsDtype.F64 or SafetensorsDtype.I64 or SafetensorsDtype.U64 => 8,
        SafetensorsDtype.F32 or SafetensorsDtype.I32 or SafetensorsDtype.U32 => 4,
        SafetensorsDtype.F16 or SafetensorsDtype.BF16 or SafetensorsDtype.I16 or SafetensorsDtype.U16 => 2,
        _ => 1,
    };

    /// <summary>Whether <see cref="SafetensorsFile.ReadInto"/> converts this dtype to float32.</summary>
    public static bool IsReadable(this SafetensorsDtype dtype) =>
        dtype is SafetensorsDtype.F32 or SafetensorsDtype.F16 or SafetensorsDtype.BF16 or SafetensorsDtype.F64;

    /// <summary>Whether <see cref="SafetensorsWriter"/> can store float32 data as this dtype.</summary>
    public static bool IsWritable(this SafetensorsDtype dtype) =>
        dtype is SafetensorsDtype.F32 or SafetensorsDtype.F16 or SafetensorsDtype.BF16;
}
