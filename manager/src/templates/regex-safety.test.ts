import { describe, expect, it } from "vitest";
import { MAX_REGEX_LENGTH, unsafeRegexReason } from "./regex-safety.js";

describe("unsafeRegexReason", () => {
  it.each([
    ["nested plus", "^(a+)+$", /nested quantifier/],
    ["nested star in a non-capturing group", "^(?:\\w*\\s?)*$", /nested quantifier/],
    ["nested two levels deep", "((ab)*c)+", /nested quantifier/],
    ["a named group repeated around a repetition", "(?<word>[a-z]+,)+", /nested quantifier/],
    ["an open-ended brace around a plus", "(x+y){2,}", /nested quantifier/],
    ["a large brace bound around a star", "(x*y){1,100}", /nested quantifier/],
    ["a numbered backreference", "^(a)\\1$", /backreference/],
    ["a named backreference", "(?<q>['\"]).*\\k<q>", /backreference/],
    ["a repeated group with an empty alternative", "^(a|)*$", /empty alternative/],
    ["a repeated group with the same alternative twice", "^(ab|cd|ab)+$", /alternatives repeat each other/],
    ["too long", "a".repeat(MAX_REGEX_LENGTH + 1), /more than 512/],
  ])("refuses %s", (_, source, reason) => {
    expect(unsafeRegexReason(source)).toMatch(reason);
  });

  it.each([
    ["a plain pattern", "^[a-zA-Z0-9_]+$"],
    ["quantifiers side by side", "^\\d+\\.\\d+\\.\\d+$"],
    ["a repeated group without a repetition inside", "^(ab)+$"],
    ["a group with a repetition inside, not repeated", "^(\\d+)\\.(\\d+)$"],
    ["an optional group with a repetition inside", "^v(\\d+)?$"],
    ["a small brace bound around a plus", "^(\\d+\\.){1,3}$"],
    ["quantifier characters inside a character class", "^[+*(){}]+$"],
    ["an escaped parenthesis and plus", "^\\(a\\+\\)+$"],
    ["alternatives that differ", "^(true|false|1|0)$"],
    ["a repeated group of distinct alternatives", "^(ab|cd)+$"],
    ["a ready pattern from an egg", "\\)! For help, type "],
    ["a Paper-like done line", "Done \\(\\d+\\.\\d+s\\)!"],
    ["exactly the longest accepted", "a".repeat(MAX_REGEX_LENGTH)],
    ["a lookahead", "^(?=.*\\d)[a-z\\d]{8,}$"],
  ])("accepts %s", (_, source) => {
    expect(unsafeRegexReason(source)).toBeUndefined();
  });
});
