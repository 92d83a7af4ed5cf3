/**
 * The sign-in form's words for a refused token: the manager's Unauthenticated
 * message says what is wrong with the token; this says what to do.
 */
export function signInError(err: string): string {
  if (/^Unauthenticated\b/i.test(err)) {
    return `That token was not accepted (${err.replace(/^Unauthenticated:?\s*/i, "")}). Paste a whole token as printed (brt_…); an admin makes one on the Tokens page, and npm start keeps the first admin's in data/admin-token.`;
  }
  return err;
}
