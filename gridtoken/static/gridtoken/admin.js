// Copy buttons next to abbreviated identifiers (gridtoken/admin.py: abbreviated): the whole value, not its start.
"use strict";
document.addEventListener("click", (event) => {
  const button = event.target.closest(".gt-copy");
  if (!button) return;
  event.preventDefault();
  const done = () => {
    button.classList.add("copied");
    setTimeout(() => button.classList.remove("copied"), 1500);
  };
  if (navigator.clipboard && window.isSecureContext) {
    navigator.clipboard.writeText(button.dataset.copy).then(done);
    return;
  }
  // Plain http on another host than localhost has no Clipboard API: a hidden selection and the copy command.
  const area = document.createElement("textarea");
  area.value = button.dataset.copy;
  area.setAttribute("readonly", "");
  area.style.position = "fixed";
  area.style.opacity = "0";
  document.body.appendChild(area);
  area.select();
  document.execCommand("copy");
  area.remove();
  done();
});
