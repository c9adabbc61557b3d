/// IEEE binary16 conversions on bit patterns, for the layers that must not call the kernels
/// (formats, quantizers). Exact to fp32; fp32 → fp16 rounds to nearest even, as F16C does.
public enum Half {
    @inline(__always) public static func toFloat(_ h: UInt16) -> Float { Float(Float16(bitPattern: h)) }
    @inline(__always) public static func fromFloat(_ v: Float) -> UInt16 { Float16(v).bitPattern }

    /// dst[i] = fp32 of src[i] for `count` values.
    public static func decode(_ src: UnsafePointer<UInt16>, _ dst: UnsafeMutablePointer<Float>, count: Int) {
        for i in 0..<count { dst[i] = toFloat(src[i]) }
    }
}
