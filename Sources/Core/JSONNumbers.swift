import Foundation

/// Typed reads of values produced by JSONSerialization, which represents numbers and booleans
/// alike as NSNumber (so `0 is Bool` holds). JSON booleans are NSNumbers of ObjC type "c".
public enum JSONNumber {
    public static func isBoolean(_ n: NSNumber) -> Bool { String(cString: n.objCType) == "c" }

    /// An exact integer (rejects fractions, booleans, strings and values outside Int).
    public static func int(_ v: Any?) -> Int? {
        guard let v, let n = v as? NSNumber, !isBoolean(n) else { return nil }
        return v as? Int
    }

    /// Any finite JSON number (booleans rejected).
    public static func double(_ v: Any?) -> Double? {
        guard let v, let n = v as? NSNumber, !isBoolean(n) else { return nil }
        let d = n.doubleValue
        return d.isFinite ? d : nil
    }

    /// A JSON boolean.
    public static func bool(_ v: Any?) -> Bool? {
        guard let v, let n = v as? NSNumber, isBoolean(n) else { return nil }
        return n.boolValue
    }

    /// True for an absent key or an explicit JSON null.
    public static func isNull(_ v: Any?) -> Bool { v == nil || v is NSNull }
}
