import Engine
import Foundation

/// The run's JSON log and the SVG plots (block reconstruction losses; end-to-end tuning KL).
public enum CalibrationReport {
    struct Log: Codable {
        var options: [String: String]
        var seconds: Double
        var peakResidentBytes: Int?
        /// Mean fraction of rounding decisions flipped vs nearest, per layer type (paper's Table 7).
        var flippedByLayer: [String: Double]
        var blocks: [BlockReport]
    }

    /// Mean flipped fraction per layer type over all blocks.
    public static func flippedByLayer(_ reports: [BlockReport]) -> [(String, Double)] {
        BlockParameters.linearNames.map { name in
            let values = reports.compactMap { $0.flipped[name] }
            return (name, values.isEmpty ? 0 : values.reduce(0, +) / Double(values.count))
        }
    }

    public static func json(reports: [BlockReport], options: CalibrationOptions, seconds: Double, peakResidentBytes: Int?) throws -> Data {
        let log = Log(options: Dictionary(uniqueKeysWithValues: options.metadata), seconds: seconds,
                      peakResidentBytes: peakResidentBytes,
                      flippedByLayer: Dictionary(uniqueKeysWithValues: flippedByLayer(reports)), blocks: reports)
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys]
        return try encoder.encode(log)
    }

    /// Block reconstruction loss per block before (nearest rounding of the initial weights)
    /// and after calibration, on a log scale (like the paper's Fig. 4).
    public static func svg(reports: [BlockReport], title: String) -> String {
        let width = 720.0, height = 380.0, left = 70.0, right = 20.0, top = 40.0, bottom = 50.0
        let plotW = width - left - right, plotH = height - top - bottom
        let values = reports.flatMap { [$0.lossInitial, $0.lossFinal] }.filter { $0 > 0 && $0.isFinite }
        guard let lo0 = values.min(), let hi0 = values.max(), !reports.isEmpty else {
            return "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"\(Int(width))\" height=\"40\"><text x=\"10\" y=\"25\">no data</text></svg>\n"
        }
        let lo = floor(log10(lo0)), hi = max(ceil(log10(hi0)), lo + 1)
        func x(_ i: Int) -> Double { left + (reports.count == 1 ? plotW / 2 : plotW * Double(i) / Double(reports.count - 1)) }
        func y(_ v: Double) -> Double { top + plotH * (1 - (log10(max(v, pow(10, lo))) - lo) / (hi - lo)) }
        var s = header(width: width, height: height, title: title)
        for e in Int(lo)...Int(hi) {
            let yy = y(pow(10, Double(e)))
            s += "<line x1=\"\(left)\" y1=\"\(yy)\" x2=\"\(width - right)\" y2=\"\(yy)\" stroke=\"#ddd\"/>\n"
            s += "<text x=\"\(left - 6)\" y=\"\(yy + 4)\" text-anchor=\"end\">1e\(e)</text>\n"
        }
        let step = max(1, reports.count / 10)
        for (i, r) in reports.enumerated() where i % step == 0 || i == reports.count - 1 {
            s += "<text x=\"\(x(i))\" y=\"\(height - bottom + 18)\" text-anchor=\"middle\">\(r.block)</text>\n"
        }
        s += "<text x=\"\(left + plotW / 2)\" y=\"\(height - 12)\" text-anchor=\"middle\">block</text>\n"
        s += "<text x=\"16\" y=\"\(top + plotH / 2)\" text-anchor=\"middle\" transform=\"rotate(-90 16 \(top + plotH / 2))\">reconstruction loss (log)</text>\n"
        func line(_ key: KeyPath<BlockReport, Double>, _ color: String) -> String {
            let points = reports.enumerated().map { "\(x($0.offset)),\(y($0.element[keyPath: key]))" }.joined(separator: " ")
            return "<polyline fill=\"none\" stroke=\"\(color)\" stroke-width=\"2\" points=\"\(points)\"/>\n"
        }
        s += line(\.lossInitial, "#d62728") + line(\.lossFinal, "#1f77b4")
        s += legend([("#d62728", "initial weights, nearest rounding"), ("#1f77b4", "after calibration")], x: left + 10, y: top + 6)
        s += "</svg>\n"
        return s
    }

    /// End-to-end tuning: the training KL per step (mean of the last 10 steps) and the
    /// held-out KL at each check, against the step.
    public static func svg(tuning r: EndToEndReport, title: String) -> String {
        let width = 720.0, height = 380.0, left = 70.0, right = 20.0, top = 40.0, bottom = 50.0
        let plotW = width - left - right, plotH = height - top - bottom
        let smoothed = r.stepLosses.indices.map { i -> Double in
            let window = r.stepLosses[max(0, i - 9)...i]
            return Double(window.reduce(0, +)) / Double(window.count)
        }
        let held = r.evalKL.filter { $0.count == 2 }
        let values = smoothed + held.map { $0[1] }
        guard let hi0 = values.max(), hi0 > 0, !held.isEmpty else {
            return "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"\(Int(width))\" height=\"40\"><text x=\"10\" y=\"25\">no data</text></svg>\n"
        }
        let steps = Double(max(1, r.stepLosses.count, Int(held.last![0])))
        let hi = hi0 * 1.1
        func x(_ step: Double) -> Double { left + plotW * step / steps }
        func y(_ v: Double) -> Double { top + plotH * (1 - v / hi) }
        var s = header(width: width, height: height, title: title)
        for k in 0...5 {
            let v = hi * Double(k) / 5, yy = y(v)
            s += "<line x1=\"\(left)\" y1=\"\(yy)\" x2=\"\(width - right)\" y2=\"\(yy)\" stroke=\"#ddd\"/>\n"
            s += "<text x=\"\(left - 6)\" y=\"\(yy + 4)\" text-anchor=\"end\">\(String(format: "%.3g", v))</text>\n"
        }
        for k in 0...4 {
            let step = steps * Double(k) / 4
            s += "<text x=\"\(x(step))\" y=\"\(height - bottom + 18)\" text-anchor=\"middle\">\(Int(step))</text>\n"
        }
        s += "<text x=\"\(left + plotW / 2)\" y=\"\(height - 12)\" text-anchor=\"middle\">step</text>\n"
        s += "<text x=\"16\" y=\"\(top + plotH / 2)\" text-anchor=\"middle\" transform=\"rotate(-90 16 \(top + plotH / 2))\">KL(fp ‖ quantized) per token</text>\n"
        let train = smoothed.enumerated().map { "\(x(Double($0.offset + 1))),\(y($0.element))" }.joined(separator: " ")
        s += "<polyline fill=\"none\" stroke=\"#9ecae1\" stroke-width=\"1.5\" points=\"\(train)\"/>\n"
        let points = held.map { "\(x($0[0])),\(y($0[1]))" }.joined(separator: " ")
        s += "<polyline fill=\"none\" stroke=\"#d62728\" stroke-width=\"2\" points=\"\(points)\"/>\n"
        for p in held { s += "<circle cx=\"\(x(p[0]))\" cy=\"\(y(p[1]))\" r=\"3.5\" fill=\"#d62728\"/>\n" }
        s += legend([("#9ecae1", "training window (mean of last 10 steps)"), ("#d62728", "held-out windows")], x: left + 10, y: top + 6)
        s += "</svg>\n"
        return s
    }

    /// The opening tag, a white background and the centred title.
    static func header(width: Double, height: Double, title: String) -> String {
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"\(Int(width))\" height=\"\(Int(height))\" font-family=\"sans-serif\" font-size=\"12\">\n"
            + "<rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n"
            + "<text x=\"\(width / 2)\" y=\"22\" text-anchor=\"middle\" font-size=\"14\">\(escape(title))</text>\n"
    }

    /// One line per (colour, label), a colour swatch and its label, from (x, y) down.
    static func legend(_ entries: [(String, String)], x: Double, y: Double) -> String {
        entries.enumerated().map { i, entry in
            let top = y + 18 * Double(i)
            return "<rect x=\"\(x)\" y=\"\(top)\" width=\"12\" height=\"3\" fill=\"\(entry.0)\"/><text x=\"\(x + 18)\" y=\"\(top + 6)\">\(escape(entry.1))</text>\n"
        }.joined()
    }

    static func escape(_ text: String) -> String {
        text.replacingOccurrences(of: "&", with: "&amp;").replacingOccurrences(of: "<", with: "&lt;").replacingOccurrences(of: ">", with: "&gt;")
    }
}
