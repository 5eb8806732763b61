/**
 * The operator's bearer token: taken from `?token=` once (then moved out of the address bar with
 * history.replaceState, so it is not left in the history or a shared link), kept in sessionStorage
 * for this tab, or typed into the token box.
 */
const KEY = 'exec-ops-token';

/** Reads `?token=` (storing it and removing it from the URL) or the stored one; null when neither. */
export function takeToken(): string | null {
  const url = new URL(location.href);
  const fromUrl = url.searchParams.get('token');
  if (fromUrl !== null) {
    url.searchParams.delete('token');
    history.replaceState(history.state, '', `${url.pathname}${url.search}${url.hash}`);
    if (fromUrl.trim()) {
      storeToken(fromUrl.trim());
      return fromUrl.trim();
    }
  }
  try {
    return sessionStorage.getItem(KEY);
  } catch {
    return null;
  }
}

export function storeToken(token: string | null): void {
  try {
    if (token) sessionStorage.setItem(KEY, token);
    else sessionStorage.removeItem(KEY);
  } catch {
    // Storage refused (a private mode): the token lives in this page only.
  }
}
