import XCTest
@testable import Engine
@testable import Eval

/// Zero-shot evaluation: prompts as lm-eval builds them, its tokenization of
/// (context, continuation) pairs, the scorer against a float64 reference, and the metrics.
final class EvalTests: XCTestCase {
    /// The task files ship in the repository's data/ (data/README.md): a missing one fails.
    func loadItems(_ task: ZeroShotTask) throws -> [TaskItem] {
        try task.load(path: TestPaths.data + "/" + task.defaultFile)
    }

    // MARK: prompt construction, from real items of the data files

    func testPIQAPrompt() throws {
        let items = try loadItems(.piqa)
        XCTAssertEqual(items.count, 1838)
        let first = items[0]
        XCTAssertEqual(first.requests.map(\.context), Array(repeating: "Question: How do I ready a guinea pig cage for it's new occupants?\nAnswer:", count: 2))
        XCTAssertEqual(first.requests.map(\.continuation), [
            " Provide the guinea pig with a cage full of a few inches of bedding made of ripped paper strips, you will also need to supply it with a water bottle and a food dish.",
            " Provide the guinea pig with a cage full of a few inches of bedding made of ripped jeans material, you will also need to supply it with a water bottle and a food dish.",
        ])
        XCTAssertEqual(first.gold, 0)
        // Whitespace inside the solutions is kept as lm-eval keeps it (no strip).
        let second = items[1]
        XCTAssertEqual(second.requests[0].context, "Question: dresser\nAnswer:")
        XCTAssertEqual(second.requests.map(\.continuation), [" replace drawer with bobby pin ", " finish, woodgrain with  bobby pin "])
        XCTAssertEqual(second.choices, ["replace drawer with bobby pin ", "finish, woodgrain with  bobby pin "])
        XCTAssertEqual(second.gold, 1)
    }

    func testARCPromptAndNumericAnswerKeys() throws {
        let easy = try loadItems(.arc_easy)
        XCTAssertEqual(easy.count, 2376)
        let first = easy[0]
        XCTAssertEqual(first.id, "Mercury_417466")
        XCTAssertEqual(first.requests[0].context, "Question: Which statement best explains why photosynthesis is the foundation of most food webs?\nAnswer:")
        XCTAssertEqual(first.requests.map(\.continuation), [" Sunlight is the source of energy for nearly all ecosystems.", " Most ecosystems are found on land instead of in water.",
                                                            " Carbon dioxide is more available than other gases.", " The producers in all ecosystems are plants."])
        XCTAssertEqual(first.choices, ["Sunlight is the source of energy for nearly all ecosystems.", "Most ecosystems are found on land instead of in water.",
                                       "Carbon dioxide is more available than other gases.", "The producers in all ecosystems are plants."])
        XCTAssertEqual(first.gold, 0) // answerKey "A"
        // answerKey "2" with labels "1".."4": gold = labels.index("2") = 1.
        let numeric = easy[14]
        XCTAssertEqual(numeric.id, "NYSEDREGENTS_2015_8_28")
        XCTAssertEqual(numeric.requests[0].context, "Question: All living and nonliving material is composed of\nAnswer:")
        XCTAssertEqual(numeric.requests.map(\.continuation), [" air", " elements", " water", " soil"])
        XCTAssertEqual(numeric.gold, 1)
        let challenge = try loadItems(.arc_challenge)
        XCTAssertEqual(challenge.count, 1172)
        XCTAssertEqual(challenge[0].id, "Mercury_7175875")
        XCTAssertEqual(challenge[0].requests[0].context, "Question: An astronomer observes that a planet rotates faster after a meteorite impact. Which is the most likely effect of this increase in rotation?\nAnswer:")
        XCTAssertEqual(challenge[0].requests.map(\.continuation), [" Planetary density will decrease.", " Planetary years will become longer.",
                                                                   " Planetary days will become shorter.", " Planetary gravity will become stronger."])
        XCTAssertEqual(challenge[0].gold, 2) // answerKey "C"
        // A key that is not among the labels is refused.
        XCTAssertNil(ZeroShotTask.arc(id: "x", question: "q", choices: ["a", "b"], labels: ["A", "B"], answerKey: "1"))
    }

    func testHellaSwagPromptAndPreprocess() throws {
        let items = try loadItems(.hellaswag)
        XCTAssertEqual(items.count, 10042)
        let first = items[0]
        XCTAssertEqual(first.requests[0].context, "Roof shingle removal: A man is sitting on a roof. he")
        XCTAssertEqual(first.requests.map(\.continuation), [" is using wrap to wrap a pair of skis.", " is ripping level tiles off.",
                                                            " is holding a rubik's cube.", " starts pulling up roofing on a roof."])
        XCTAssertEqual(first.gold, 3)
        // lm-eval's preprocess still changes a few items of the copy: bracketed text...
        XCTAssertEqual(items[3505].requests[0].context,
                       "Family Life: How to entertain a toddler. Ask the toddler what he or she would like to do instead of doing what you would like to do.. Visit a site like to find loads of creative activities for toddlers and preschoolers.. Choose small, simple games like candy land or chutes and ladders.")
        // ... and a double space.
        XCTAssertEqual(items[4121].requests[1].continuation,
                       " Stop when you are not overly tired and give yourself a break before going to bed. Do not be embarrassed by physical exertion.")
        XCTAssertEqual(items[4121].choices[1], "Stop when you are not overly tired and give yourself a break before going to bed. Do not be embarrassed by physical exertion.")
        // The preprocess itself, rule by rule (as Python: strip, " [title]", \[.*?\], one "  " pass).
        XCTAssertEqual(ZeroShotTask.hellaswagPreprocess("  How to x [title] Do y [step] then [a [b] c  "), "How to x. Do y then c")
        XCTAssertEqual(ZeroShotTask.hellaswagPreprocess("a   b [open\nline] z"), "a  b [open\nline] z")
        XCTAssertEqual(ZeroShotTask.hellaswagPreprocess("unmatched [ bracket"), "unmatched [ bracket")
    }

    func testWinoGrandePartialPrompt() throws {
        let items = try loadItems(.winogrande)
        XCTAssertEqual(items.count, 1267)
        let first = items[0]
        XCTAssertEqual(first.requests, [
            ChoiceRequest(context: "Sarah was a much better surgeon than Maria so Sarah", continuation: " always got the easier cases."),
            ChoiceRequest(context: "Sarah was a much better surgeon than Maria so Maria", continuation: " always got the easier cases."),
        ])
        XCTAssertEqual(first.gold, 1) // answer "2"
        XCTAssertEqual(items[2].requests, [
            ChoiceRequest(context: "They were worried the wine would ruin the bed and the blanket, but the blanket", continuation: " was't ruined."),
            ChoiceRequest(context: "They were worried the wine would ruin the bed and the blanket, but the bed", continuation: " was't ruined."),
        ])
        // The part after the blank is stripped (Python str.strip) and gets one leading space.
        let item = try XCTUnwrap(ZeroShotTask.winogrande(id: "t", sentence: "Tom gave _ \t the book. \n", options: ["Ann", "Bob"], answer: 0))
        XCTAssertEqual(item.requests.map(\.context), ["Tom gave Ann", "Tom gave Bob"])
        XCTAssertEqual(item.requests.map(\.continuation), [" the book.", " the book."])
        XCTAssertEqual(item.choices, ["Tom gave Ann", "Tom gave Bob"])
        XCTAssertNil(ZeroShotTask.winogrande(id: "t", sentence: "no blank", options: ["a", "b"], answer: 0))
    }

    func testBadDataAndUnknownTask() throws {
        XCTAssertThrowsError(try ZeroShotTask(name: "mmlu")) { error in
            XCTAssertEqual("\(error)", "unknown task 'mmlu' (known: piqa, arc_easy, arc_challenge, hellaswag, winogrande)")
        }
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("tessera-eval-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: dir) }
        func write(_ text: String) throws -> String {
            let path = dir.appendingPathComponent(UUID().uuidString + ".jsonl").path
            try text.write(toFile: path, atomically: true, encoding: .utf8)
            return path
        }
        let good = #"{"goal": "g", "sol1": "a", "sol2": "b", "label": 1}"#
        let bad = try write(good + "\n{\"goal\": \"g\", \"sol1\": \"a\", \"label\": 0}\n")
        XCTAssertThrowsError(try ZeroShotTask.piqa.load(path: bad)) { error in
            XCTAssertEqual(error as? TaskError, .badItem(path: bad, line: 2, reason: "'sol2' is missing or not a string (piqa schema)"))
        }
        let notJSON = try write("[1, 2]\n")
        XCTAssertThrowsError(try ZeroShotTask.piqa.load(path: notJSON)) { XCTAssertEqual($0 as? TaskError, .badItem(path: notJSON, line: 1, reason: "not a JSON object")) }
        let label = try write(#"{"goal": "g", "sol1": "a", "sol2": "b", "label": 2}"#)
        XCTAssertThrowsError(try ZeroShotTask.piqa.load(path: label)) { XCTAssertEqual($0 as? TaskError, .badItem(path: label, line: 1, reason: "'label' 2 is not in 0..<2")) }
        XCTAssertThrowsError(try ZeroShotTask.piqa.load(path: try write("\n\n"))) { XCTAssertTrue("\($0)".hasSuffix("has no items")) }
        XCTAssertThrowsError(try ZeroShotTask.piqa.load(path: dir.path + "/missing.jsonl")) { XCTAssertTrue("\($0)".contains("no such file")) }
        let own = try write(good + "\n")
        XCTAssertEqual(try ZeroShotTask.piqa.load(path: own), [ZeroShotTask.piqa(id: "1", goal: "g", solutions: ["a", "b"], label: 1)])
    }

    // MARK: lm-eval's tokenization of (context, continuation)

    /// A toy tokenizer that is easy to reason about: "ab" and " c" are single tokens, any
    /// other byte is its own token.
    static func toyEncode(_ s: String) -> [Int32] {
        var out: [Int32] = [], bytes = Array(s.utf8), i = 0
        while i < bytes.count {
            if i + 1 < bytes.count && bytes[i] == 97 && bytes[i + 1] == 98 { out.append(1000); i += 2; continue }
            if i + 1 < bytes.count && bytes[i] == 32 && bytes[i + 1] == 99 { out.append(1001); i += 2; continue }
            out.append(Int32(bytes[i])); i += 1
        }
        return out
    }

    func testEncodePairBoundaryRule() {
        // Trailing whitespace of the context moves to the continuation: "x " + "c" → "x" + " c".
        XCTAssertEqual(LMEvalEncoding.encodePair(context: "x ", continuation: "c", encode: Self.toyEncode),
                       EncodedRequest(context: [120], continuation: [1001]))
        XCTAssertEqual(LMEvalEncoding.encodePair(context: "x \t\n", continuation: "c", encode: Self.toyEncode),
                       EncodedRequest(context: [120], continuation: [32, 9, 10, 99]))
        // The context's last token merges across the boundary ("a"+"b" → "ab"): the context
        // keeps its own tokens and the continuation is whole[context.count...], so the merged
        // token is dropped and the model reads "xa" then nothing of "b".
        XCTAssertEqual(LMEvalEncoding.encodePair(context: "xa", continuation: "bd", encode: Self.toyEncode),
                       EncodedRequest(context: [120, 97], continuation: [100]))
    }

    func testEncodePairWithARealTokenizer() throws {
        let path = try TestPaths.requireShared("data/tokenizer-vectors/ggml-vocab-gpt-2.gguf")
        let tok = try Tokenizer.fromGGUF(GGUFFile(path: path))
        let enc = { tok.encode($0, addBOS: false, parseSpecial: true) }
        // A context ending in a space: the space joins the continuation's word token.
        let spaced = LMEvalEncoding.encode(context: "Question: capital?\nAnswer: ", continuation: "Paris", tokenizer: tok)
        XCTAssertEqual(spaced.context, enc("Question: capital?\nAnswer:"))
        XCTAssertEqual(spaced.continuation, enc(" Paris"))
        XCTAssertEqual(spaced.continuation.count, 1)
        // Naive tokenization would have scored a lone space token and "Paris" without it.
        XCTAssertNotEqual(enc("Question: capital?\nAnswer: ") + enc("Paris"), spaced.context + spaced.continuation)
        // A merge across the boundary: "sa" + "t on the mat" → whole has " sat"; the context
        // keeps " sa", the continuation starts after as many tokens as the context has.
        let merged = LMEvalEncoding.encode(context: "The cat sa", continuation: "t on the mat", tokenizer: tok)
        let whole = enc("The cat sat on the mat"), ctx = enc("The cat sa")
        XCTAssertEqual(merged.context, ctx)
        XCTAssertEqual(merged.continuation, Array(whole[ctx.count...]))
        XCTAssertNotEqual(Array(whole.prefix(ctx.count)), ctx, "the example must merge across the boundary")
        // An empty context: the prefix token (BOS, else EOS) then the continuation.
        let empty = LMEvalEncoding.encode(context: "", continuation: " Paris", tokenizer: tok)
        XCTAssertEqual(empty.context, [try XCTUnwrap(tok.bosID ?? tok.eosID)])
        XCTAssertEqual(empty.continuation, enc(" Paris"))
    }

    // MARK: metrics

    func testAccVersusAccNormByLength() {
        // The longer choice has the lower sum but the higher per-byte score.
        let lls = [-10.0, -12.0]
        let choices = ["short one", "a much longer continuation"]
        let p = ZeroShotMetrics.predictions(logLikelihoods: lls, choices: choices)
        XCTAssertEqual(p.acc, 0)
        XCTAssertEqual(p.norm, 1)  // -10/9 = -1.11 < -12/26 = -0.46
        XCTAssertEqual(p.bytes, 1)
        // Normalisation by the choice without the delimiter: 4 vs 5 bytes flips -4.1 vs -5.
        let q = ZeroShotMetrics.predictions(logLikelihoods: [-4.1, -5.0], choices: ["abcd", "abcde"])
        XCTAssertEqual(q.acc, 0)
        XCTAssertEqual(q.norm, 1) // -1.025 vs -1.0
        // Non-ASCII: lm-eval's acc_norm counts characters (len(str)), acc_bytes UTF-8 bytes.
        // "éééé" is 4 characters but 8 bytes.
        let r = ZeroShotMetrics.predictions(logLikelihoods: [-6.0, -4.4], choices: ["éééé", "abcd"])
        XCTAssertEqual(r.acc, 1)
        XCTAssertEqual(r.norm, 1)  // -1.5 vs -1.1
        XCTAssertEqual(r.bytes, 0) // -0.75 vs -1.1
        // Ties go to the first index (numpy.argmax).
        XCTAssertEqual(ZeroShotMetrics.argmax([-1, -1, -2]), 0)
    }

    func testStandardErrorAsLMEval() {
        let (mean, stderr) = ZeroShotMetrics.meanAndStandardError([1, 0, 1, 1])
        XCTAssertEqual(mean, 0.75)
        XCTAssertEqual(stderr, (0.75 * 0.25 / 3).squareRoot(), accuracy: 1e-12)
        XCTAssertTrue(ZeroShotMetrics.meanAndStandardError([1]).stderr.isNaN)
    }

    func testSelection() {
        XCTAssertEqual(ZeroShotEvaluator.selection(count: 5, limit: nil, seed: nil), [0, 1, 2, 3, 4])
        XCTAssertEqual(ZeroShotEvaluator.selection(count: 5, limit: 3, seed: nil), [0, 1, 2])
        XCTAssertEqual(ZeroShotEvaluator.selection(count: 5, limit: 9, seed: 1), [0, 1, 2, 3, 4])
        let a = ZeroShotEvaluator.selection(count: 1000, limit: 10, seed: 7)
        XCTAssertEqual(a, ZeroShotEvaluator.selection(count: 1000, limit: 10, seed: 7))
        XCTAssertEqual(a, a.sorted())
        XCTAssertEqual(Set(a).count, 10)
        XCTAssertNotEqual(a, ZeroShotEvaluator.selection(count: 1000, limit: 10, seed: 8))
    }

    // MARK: the scorer against a float64 reference

    func makeTinyModel(seed: UInt64 = 21) throws -> (InMemorySource, LlamaModel) {
        let source = InMemorySource(config: InMemorySource.tinyConfig(), seed: seed)
        return (source, try WeightBinder(source: source, linears: .fp32).model(pool: ThreadPool(threads: 2)))
    }

    /// Σ log p(continuation | context) in float64, the whole sequence from scratch; `window`
    /// keeps only the last tokens (lm-eval's left truncation).
    static func referenceLogLikelihood(_ ref: ReferenceLlama, _ r: EncodedRequest, window: Int? = nil) -> (Double, Bool) {
        var full = (r.context + r.continuation).map { Int($0) }
        if let window { full = Array(full.suffix(window + 1)) }
        let input = Array(full.dropLast())
        let logits = ref.logits(input)
        var sum = 0.0, greedy = true
        for j in r.continuation.indices {
            let p = full.count - r.continuation.count + j   // position of the scored token
            let row = logits[p - 1]
            let m = row.max()!
            let lse = m + log(row.reduce(0) { $0 + exp($1 - m) })
            sum += row[full[p]] - lse
            if row.firstIndex(of: m)! != full[p] { greedy = false }
        }
        return (sum, greedy)
    }

    func randomTokens(_ n: Int, _ rng: inout SplitMix64, vocab: Int) -> [Int32] {
        (0..<n).map { _ in Int32(rng.next() % UInt64(vocab)) }
    }

    func testScorerMatchesFloat64ReferenceWithSharedContext() throws {
        let (source, model) = try makeTinyModel()
        let ref = ReferenceLlama(source: source)
        var rng = SplitMix64(seed: 5)
        let V = source.config.vocab
        let context = randomTokens(9, &rng, vocab: V)
        let requests = [1, 4, 2, 6].map { EncodedRequest(context: context, continuation: randomTokens($0, &rng, vocab: V)) }
        let scorer = LoglikelihoodScorer(session: InferenceSession(model: model, contextLength: 64, maxBatch: 4))
        let scores = try scorer.score(requests)
        for (r, s) in zip(requests, scores) {
            let (expected, greedy) = Self.referenceLogLikelihood(ref, r)
            XCTAssertEqual(s.logLikelihood, expected, accuracy: 1e-3 * Double(r.continuation.count), "continuation \(r.continuation)")
            XCTAssertEqual(s.isGreedy, greedy)
            XCTAssertEqual(s.tokenCount, r.continuation.count)
        }
        // The context went through once; each continuation but its last token after it.
        XCTAssertEqual(scorer.tokensProcessed, 9 + (0 + 3 + 1 + 5))
        // Scoring again (cache reused from scratch) gives the same sums.
        XCTAssertEqual(try scorer.score(requests).map(\.logLikelihood), scores.map(\.logLikelihood))
    }

    func testScorerWithDifferentContextsAsWinoGrande() throws {
        let (source, model) = try makeTinyModel(seed: 22)
        let ref = ReferenceLlama(source: source)
        var rng = SplitMix64(seed: 6)
        let V = source.config.vocab
        let prefix = randomTokens(7, &rng, vocab: V), continuation = randomTokens(5, &rng, vocab: V)
        // Two contexts differing in their last tokens (the substituted option), one continuation.
        let requests = [
            EncodedRequest(context: prefix + [3], continuation: continuation),
            EncodedRequest(context: prefix + [50, 51], continuation: continuation),
            EncodedRequest(context: prefix, continuation: [9]),   // a context that is the common prefix
        ]
        let scorer = LoglikelihoodScorer(session: InferenceSession(model: model, contextLength: 64))
        let scores = try scorer.score(requests)
        for (r, s) in zip(requests, scores) {
            XCTAssertEqual(s.logLikelihood, Self.referenceLogLikelihood(ref, r).0, accuracy: 1e-3 * Double(r.continuation.count))
        }
        // Shared prefix (6 tokens: one context token must stay per request) evaluated once.
        XCTAssertEqual(scorer.tokensProcessed, 6 + (2 + 4) + (3 + 4) + (1 + 0))
        // WinoGrande's prediction is the argmax over the contexts of the same continuation.
        let item = TaskItem(id: "w", requests: [ChoiceRequest(context: "a", continuation: " c"), ChoiceRequest(context: "b", continuation: " c")],
                            choices: ["a", "b"], gold: 1)
        let evaluator = ZeroShotEvaluator(scorer: scorer) { r in
            r.context == "a" ? requests[0] : requests[1]
        }
        let result = try evaluator.evaluate(item, task: .winogrande, index: 0)
        XCTAssertEqual(result.prediction, result.scores[0].logLikelihood >= result.scores[1].logLikelihood ? 0 : 1)
        for (a, b) in zip(result.scores, scores.prefix(2)) { XCTAssertEqual(a.logLikelihood, b.logLikelihood, accuracy: 1e-4) }
    }

    func testPackedForwardEqualsSeparateRuns() throws {
        let (source, model) = try makeTinyModel(seed: 25)
        var rng = SplitMix64(seed: 8)
        let V = source.config.vocab
        let root = randomTokens(5, &rng, vocab: V), childA = randomTokens(3, &rng, vocab: V)
        let childB = randomTokens(2, &rng, vocab: V), grandchild = randomTokens(2, &rng, vocab: V)
        let alone = randomTokens(4, &rng, vocab: V)
        let packed = InferenceSession(model: model, contextLength: 64)
        // Something already in the cache: every sequence sees it.
        let cached = randomTokens(2, &rng, vocab: V)
        try packed.forward(cached, logitRows: 0)
        var rows: [String: [[Float]]] = [:]
        let names = ["root", "a", "b", "grandchild", "alone"]
        try packed.forwardPacked([
            PackedSequence(tokens: root, logitRows: 2),
            PackedSequence(tokens: childA, parent: 0, logitRows: 3),
            PackedSequence(tokens: childB, parent: 0, logitRows: 1),
            PackedSequence(tokens: grandchild, parent: 2, logitRows: 2),
            PackedSequence(tokens: alone, logitRows: 4),
        ]) { sequence, _, row in rows[names[sequence], default: []].append(Array(row)) }
        XCTAssertEqual(packed.position, 2 + 16)

        func separately(_ tokens: [Int32], last n: Int) throws -> [[Float]] {
            let session = InferenceSession(model: model, contextLength: 64)
            return try session.forward(cached + tokens, logitRows: n)
        }
        let expected: [String: [[Float]]] = [
            "root": try separately(root, last: 2), "a": try separately(root + childA, last: 3),
            "b": try separately(root + childB, last: 1), "grandchild": try separately(root + childB + grandchild, last: 2),
            "alone": try separately(alone, last: 4),
        ]
        for name in names {
            XCTAssertEqual(rows[name]?.count, expected[name]!.count, name)
            for (got, want) in zip(rows[name] ?? [], expected[name]!) {
                XCTAssertLessThan(zip(got, want).map { abs($0 - $1) }.max()!, 1e-4, name)
            }
        }
        // A batch over maxBatch, or a parent that is not earlier, is refused.
        let small = InferenceSession(model: model, contextLength: 64, maxBatch: 4)
        XCTAssertThrowsError(try small.forwardPacked([PackedSequence(tokens: alone), PackedSequence(tokens: root)]) { _, _, _ in })
        XCTAssertThrowsError(try packed.forwardPacked([PackedSequence(tokens: root, parent: 0)]) { _, _, _ in })
    }

    func testScorerPacksItemsAndMatchesReference() throws {
        let (source, model) = try makeTinyModel(seed: 26)
        let ref = ReferenceLlama(source: source)
        var rng = SplitMix64(seed: 9)
        let V = source.config.vocab
        var items: [[EncodedRequest]] = []
        for i in 0..<7 {
            if i % 2 == 0 {
                // Shared context (PIQA, ARC, HellaSwag), continuations of 1…4 tokens.
                let context = randomTokens(3 + i, &rng, vocab: V)
                items.append((1...4).map { EncodedRequest(context: context, continuation: randomTokens($0, &rng, vocab: V)) })
            } else {
                // Different contexts, one continuation (WinoGrande).
                let prefix = randomTokens(i, &rng, vocab: V), continuation = randomTokens(3, &rng, vocab: V)
                items.append([EncodedRequest(context: prefix + randomTokens(1, &rng, vocab: V), continuation: continuation),
                              EncodedRequest(context: prefix + randomTokens(2, &rng, vocab: V), continuation: continuation)])
            }
        }
        // An item with an empty continuation, and one too long for a batch (scored on its own).
        items.append([EncodedRequest(context: [1, 2], continuation: []), EncodedRequest(context: [1, 2], continuation: [7])])
        items.append([EncodedRequest(context: randomTokens(30, &rng, vocab: V), continuation: randomTokens(4, &rng, vocab: V))])
        let scorer = LoglikelihoodScorer(session: InferenceSession(model: model, contextLength: 64, maxBatch: 24))
        let scores = try scorer.score(items: items)
        for (item, itemScores) in zip(items, scores) {
            XCTAssertEqual(itemScores.count, item.count)
            for (r, s) in zip(item, itemScores) {
                let (expected, greedy) = r.continuation.isEmpty ? (0, true) : Self.referenceLogLikelihood(ref, r)
                XCTAssertEqual(s.logLikelihood, expected, accuracy: 1e-3 * Double(max(1, r.continuation.count)), "\(r)")
                XCTAssertEqual(s.isGreedy, greedy)
            }
        }
        // Several items shared a batch: fewer batches than packable items.
        XCTAssertGreaterThan(scorer.packedBatches, 1)
        XCTAssertLessThan(scorer.packedBatches, items.count - 1)
        // Item by item gives the same sums.
        for (item, itemScores) in zip(items, scores) {
            let alone = try scorer.score(item)
            for (a, b) in zip(alone, itemScores) { XCTAssertEqual(a.logLikelihood, b.logLikelihood, accuracy: 1e-4) }
        }
    }

    func testScorerLeftTruncatesLikeLMEval() throws {
        let (source, model) = try makeTinyModel(seed: 23)
        let ref = ReferenceLlama(source: source)
        var rng = SplitMix64(seed: 7)
        let V = source.config.vocab
        let context = randomTokens(12, &rng, vocab: V)
        let requests = [EncodedRequest(context: context, continuation: randomTokens(3, &rng, vocab: V)),
                        EncodedRequest(context: context, continuation: randomTokens(1, &rng, vocab: V))]
        let scorer = LoglikelihoodScorer(session: InferenceSession(model: model, contextLength: 10))
        let scores = try scorer.score(requests)
        for (r, s) in zip(requests, scores) {
            XCTAssertEqual(s.logLikelihood, Self.referenceLogLikelihood(ref, r, window: 10).0, accuracy: 1e-3 * Double(r.continuation.count))
        }
        XCTAssertThrowsError(try scorer.score([EncodedRequest(context: [1], continuation: randomTokens(11, &rng, vocab: V))]))
    }

    func testEvaluatorMetricsOnSyntheticItems() throws {
        let (_, model) = try makeTinyModel(seed: 24)
        let scorer = LoglikelihoodScorer(session: InferenceSession(model: model, contextLength: 64))
        // Byte-level toy tokenization keeps ids inside the tiny vocabulary (97).
        let evaluator = ZeroShotEvaluator(scorer: scorer) { r in
            LMEvalEncoding.encodePair(context: r.context, continuation: r.continuation) { s in s.utf8.map { Int32($0) % 97 } }
        }
        let items = (0..<6).map { i in
            ZeroShotTask.piqa(id: "\(i)", goal: "goal \(i)", solutions: ["yes \(i)", "no, certainly not \(i)"], label: i % 2)
        }
        var progressCalls = 0
        let (metrics, results) = try evaluator.evaluate(task: .piqa, items: items.enumerated().map { ($0.offset, $0.element) }) { _, p in
            progressCalls += 1
            XCTAssertEqual(p.total, 6)
        }
        XCTAssertEqual(progressCalls, 6)
        XCTAssertEqual(metrics.count, 6)
        XCTAssertEqual(metrics.acc, results.map(\.acc).reduce(0, +) / 6, accuracy: 1e-12)
        XCTAssertEqual(try XCTUnwrap(metrics.accNorm), results.map(\.accNorm).reduce(0, +) / 6, accuracy: 1e-12)
        XCTAssertEqual(metrics.tokens, scorer.tokensProcessed)
        for r in results {
            let lls = r.scores.map(\.logLikelihood)
            XCTAssertEqual(r.prediction, lls[0] >= lls[1] ? 0 : 1)
            let norm = [lls[0] / Double(r.item.choices[0].utf8.count), lls[1] / Double(r.item.choices[1].utf8.count)]
            XCTAssertEqual(r.normalizedPrediction, norm[0] >= norm[1] ? 0 : 1)
            // The log-samples line is JSON with the item's scores.
            let object = try XCTUnwrap(try JSONSerialization.jsonObject(with: Data(r.jsonLine.utf8)) as? [String: Any])
            XCTAssertEqual(object["pred"] as? Int, r.prediction)
            XCTAssertEqual((object["choices"] as? [Any])?.count, 2)
        }
        let report = ZeroShotReport(model: "m", tasks: [metrics], limit: 6, seed: nil, threads: 2)
        XCTAssertNoThrow(try JSONSerialization.jsonObject(with: Data(report.json.utf8)))
    }

    // MARK: the demo model

    func testShortRealRunOnTheDemoModel() throws {
        // One worker: on a shared 2-core machine a second spinning worker slows this down ~4x.
        let loaded = try LoadedModel.load(path: try TestPaths.requireDemoModel(), threads: 1)
        let evaluator = ZeroShotEvaluator(scorer: LoglikelihoodScorer(session: InferenceSession(model: loaded.model, contextLength: 1024)),
                                          tokenizer: loaded.tokenizer)
        #if DEBUG
        let limit = 2   // debug builds run the model ~10x slower
        #else
        let limit = 8   // 40 items: ~10-20 s in release (`tessera eval --limit 20` is the longer look)
        #endif
        var report: [TaskMetrics] = []
        for task in ZeroShotTask.allCases {
            let items = try loadItems(task)
            let (m, results) = try evaluator.evaluate(task: task, items: (0..<limit).map { ($0, items[$0]) })
            XCTAssertEqual(m.count, limit)
            XCTAssertTrue((0...1).contains(m.acc), "\(task) acc \(m.acc)")
            if task.hasAccNorm { XCTAssertTrue((0...1).contains(try XCTUnwrap(m.accNorm))) } else { XCTAssertNil(m.accNorm) }
            for r in results { XCTAssertTrue(r.scores.allSatisfy { $0.logLikelihood < 0 && $0.logLikelihood.isFinite }) }
            report.append(m)
        }
        let summary = ZeroShotReport(model: "demo", tasks: report, limit: limit, seed: nil, threads: 2)
        XCTAssertTrue((0...1).contains(summary.average))
    }
}
