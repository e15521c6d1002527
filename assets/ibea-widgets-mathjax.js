// The Jupyter widgets HTML manager (1.0) typesets widget labels with MathJax 2's API,
// MathJax.Hub.Queue(["Typeset", MathJax.Hub, element]); the book loads MathJax 3 (no Hub), so each
// label threw "Cannot read properties of undefined (reading 'Queue')". Give MathJax 3 that one call.
(function () {
  function typeset(jobs) {
    for (const job of jobs) {
      if (Array.isArray(job) && job[0] === "Typeset" && job[2] && window.MathJax.typesetPromise) {
        window.MathJax.typesetPromise([job[2]]).catch(function () {});
      } else if (typeof job === "function") {
        job();
      }
    }
  }
  const hub = {
    Queue: function () {
      const jobs = Array.prototype.slice.call(arguments);
      const mj = window.MathJax;
      if (mj && mj.typesetPromise) typeset(jobs);
      else if (mj && mj.startup && mj.startup.promise) mj.startup.promise.then(function () { typeset(jobs); });
    },
  };
  function install() {
    const mj = window.MathJax;
    if (mj && mj.version && !mj.Hub) mj.Hub = hub;
    return Boolean(mj && mj.Hub);
  }
  if (!install()) {
    const timer = setInterval(function () { if (install()) clearInterval(timer); }, 20);
    setTimeout(function () { clearInterval(timer); }, 30000);
  }
})();
