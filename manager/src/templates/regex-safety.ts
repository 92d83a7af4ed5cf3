/**
 * Refuses regular expressions that can backtrack catastrophically. Template
 * variables' `regex` rules and `ready_pattern` come from eggs downloaded from
 * the internet and run in the manager (on every value given, on every console
 * line later): a pattern like `^(a+)+$` takes exponential time on a value of
 * thirty a's followed by a '!', and would stall the manager's event loop.
 *
 * A conservative syntactic check, not a proof: refused are
 * - patterns over MAX_REGEX_LENGTH characters;
 * - backreferences (`\1`, `\k<name>`): they make matching NP-hard;
 * - nested quantifiers: a group repeated without a small bound (`*`, `+`,
 *   `{n,}`, `{n,m}` with m > 10) that itself contains such a repetition,
 *   e.g. `(a+)+`, `(\w*\s?)*`, `((ab)*c)+`;
 * - a repeated group whose alternatives can match the same text, in its
 *   simplest form: two identical alternatives (`(a|a)*`) or an empty one
 *   (`(a|)*`).
 * Everything else is accepted (quantifiers side by side, such as `\d+\.\d+`,
 * are polynomial at worst, and values are at most 32 KiB).
 */

/** Longest pattern accepted. */
export const MAX_REGEX_LENGTH = 512;

/** A repetition whose bound above this counts as unbounded. */
const SMALL_BOUND = 10;

interface Group {
  /** Some element inside repeats without a small bound. */
  repeats: boolean;
  /** Where the group's text starts (after its opening parenthesis and prefix). */
  start: number;
  /** Positions of its top-level '|'. */
  bars: number[];
}

/**
 * Why `source` (a JavaScript regular expression without delimiters) is
 * refused, as a sentence saying what to change; undefined when it is
 * accepted. Does not check that it compiles (checkTemplate does).
 */
export function unsafeRegexReason(source: string): string | undefined {
  if (source.length > MAX_REGEX_LENGTH) return `it is ${source.length} characters long, more than ${MAX_REGEX_LENGTH}; shorten it`;
  const stack: Group[] = [{ repeats: false, start: 0, bars: [] }];
  /** Whether the element just before position i repeats unboundedly itself (a group that repeats inside). */
  let lastGroup: { repeats: boolean; text: string; bars: number[]; start: number } | undefined;
  for (let i = 0; i < source.length; i++) {
    const c = source[i]!;
    const top = stack[stack.length - 1]!;
    if (c === "\\") {
      const d = source[i + 1] ?? "";
      if (/[1-9]/.test(d) || (d === "k" && source[i + 2] === "<")) return `it uses a backreference (\\${d === "k" ? "k<...>" : d}), which can take exponential time; rewrite it without one`;
      i++;
      lastGroup = undefined;
      continue;
    }
    if (c === "[") {
      // A character class: quantifier characters inside are literal.
      let j = i + 1;
      if (source[j] === "^") j++;
      if (source[j] === "]") j++;
      for (; j < source.length && source[j] !== "]"; j++) if (source[j] === "\\") j++;
      i = j;
      lastGroup = undefined;
      continue;
    }
    if (c === "(") {
      let start = i + 1;
      if (source[i + 1] === "?") {
        // (?: (?= (?! (?<= (?<! (?<name>
        const m = /^\?(?::|=|!|<=|<!|<[A-Za-z_$][\w$]*>)/.exec(source.slice(i + 1));
        start = i + 1 + (m ? m[0].length : 1);
      }
      stack.push({ repeats: false, start, bars: [] });
      i = start - 1;
      lastGroup = undefined;
      continue;
    }
    if (c === ")") {
      if (stack.length === 1) return undefined; // Unbalanced: not a valid pattern; checkTemplate reports it.
      const g = stack.pop()!;
      lastGroup = { repeats: g.repeats, text: source.slice(g.start, i), bars: g.bars.map((b) => b - g.start), start: g.start };
      // What repeats inside a group repeats inside its parent too.
      if (g.repeats) stack[stack.length - 1]!.repeats = true;
      continue;
    }
    if (c === "|") {
      top.bars.push(i);
      lastGroup = undefined;
      continue;
    }
    const q = quantifierAt(source, i);
    if (q) {
      const unbounded = q.max === undefined || q.max > SMALL_BOUND;
      if (unbounded && lastGroup) {
        if (lastGroup.repeats) {
          return `it repeats a group that itself repeats (a nested quantifier such as (a+)+ around "(${truncate(lastGroup.text)})"), which can take exponential time; rewrite it without the nested repetition`;
        }
        const alternatives = splitAt(lastGroup.text, lastGroup.bars);
        if (alternatives.length > 1) {
          if (alternatives.some((a) => a === "")) return `it repeats a group with an empty alternative ("(${truncate(lastGroup.text)})"), which can take exponential time; make the group optional with ? instead`;
          if (new Set(alternatives).size < alternatives.length) return `it repeats a group whose alternatives repeat each other ("(${truncate(lastGroup.text)})"), which can take exponential time; list each alternative once`;
        }
      }
      if (unbounded) top.repeats = true;
      i = q.end - 1;
      // A lazy or possessive-looking suffix changes nothing here.
      if (source[i + 1] === "?") i++;
      lastGroup = undefined;
      continue;
    }
    lastGroup = undefined;
  }
  return undefined;
}

/** The quantifier starting at `i` (*, +, ?, {n}, {n,}, {n,m}), or undefined. */
function quantifierAt(s: string, i: number): { max: number | undefined; end: number } | undefined {
  const c = s[i];
  if (c === "*" || c === "+") return { max: undefined, end: i + 1 };
  if (c === "?") return { max: 1, end: i + 1 };
  if (c === "{") {
    const m = /^\{(\d+)(,(\d*))?\}/.exec(s.slice(i));
    if (!m) return undefined;
    const max = m[2] === undefined ? Number(m[1]) : m[3] === "" ? undefined : Number(m[3]);
    return { max, end: i + m[0].length };
  }
  return undefined;
}

function splitAt(text: string, bars: number[]): string[] {
  const out: string[] = [];
  let from = 0;
  for (const b of bars) {
    out.push(text.slice(from, b));
    from = b + 1;
  }
  out.push(text.slice(from));
  return out;
}

function truncate(s: string): string {
  return s.length > 40 ? `${s.slice(0, 37)}...` : s;
}
