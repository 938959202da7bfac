// Runs before the page is drawn: the theme the person chose last time (else the system's).
(function () {
  try {
    var chosen = localStorage.getItem('motive-console-theme');
    if (chosen === 'light' || chosen === 'dark') document.documentElement.setAttribute('data-theme', chosen);
  } catch (e) {
    /* storage may be unavailable: the system's theme applies */
  }
})();
