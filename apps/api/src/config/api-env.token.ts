export const API_ENV = Symbol('API_ENV');
