// bootwatch dashboard: optional niceties only; every page works without this file.
// 1. forms with data-confirm ask before posting (dismiss, disable monitoring);
// 2. filter selects submit their form when changed.
document.addEventListener("submit", function (ev) {
  var form = ev.target;
  var question = form.getAttribute && form.getAttribute("data-confirm");
  if (question && !window.confirm(question)) { ev.preventDefault(); }
});
document.addEventListener("change", function (ev) {
  var el = ev.target;
  if (el.tagName === "SELECT" && el.form && el.form.classList.contains("filters")) { el.form.submit(); }
});
