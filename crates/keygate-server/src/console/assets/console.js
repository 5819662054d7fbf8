// keygate console: the only script. Asks before a form marked data-confirm is sent
// (revoking a session, disabling a user). Without it the forms still work.
'use strict';
document.addEventListener('submit', (event) => {
  const form = event.target;
  if (!(form instanceof HTMLFormElement)) return;
  const question = form.dataset.confirm;
  if (question && !window.confirm(question)) {
    event.preventDefault();
  }
});
