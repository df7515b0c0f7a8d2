// Small DOM and value helpers every module uses.

export function $(id) {
  return document.getElementById(id);
}

// Sent as typed: a number when it is one, else the text itself, so the API's 400 says what is wrong.
export function numberOrText(raw) {
  const text = String(raw).trim();
  if (text === "") return undefined;
  const value = Number(text);
  return Number.isFinite(value) ? value : text;
}
