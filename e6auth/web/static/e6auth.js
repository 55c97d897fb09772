// The Access Tokens page: the copy button of a new token, and "select all" in the list.
// Loaded as a file: the Content-Security-Policy allows no inline script.
"use strict";

document.addEventListener("DOMContentLoaded", () => {
  for (const button of document.querySelectorAll("button[data-copy]")) {
    const field = document.getElementById(button.dataset.copy);
    button.hidden = false;
    button.addEventListener("click", async () => {
      try {
        // Only in a secure context (HTTPS, or http://127.0.0.1 and localhost).
        await navigator.clipboard.writeText(field.value);
        button.textContent = "Copied";
      } catch {
        field.focus();
        field.select();
        button.textContent = "Press Ctrl+C";
      }
    });
  }

  const all = document.getElementById("select-all");
  if (all) {
    const boxes = () => [...document.querySelectorAll("input[name=id]:not(:disabled)")];
    const reflect = () => {
      const checked = boxes().filter((box) => box.checked).length;
      all.checked = checked > 0 && checked === boxes().length;
      all.indeterminate = checked > 0 && checked < boxes().length;
    };
    all.addEventListener("change", () => {
      for (const box of boxes()) box.checked = all.checked;
    });
    for (const box of boxes()) box.addEventListener("change", reflect);
  }
});
